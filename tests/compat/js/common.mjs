// Shared by the scenario scripts: a client on the bridge named by OLLAMA_HOST, and a way
// to hand results back to pytest (one JSON document on stdout).
import { Ollama } from "ollama";

// ollama-js does not read OLLAMA_HOST itself (it defaults to 127.0.0.1:11434), so apps pass it.
export const client = new Ollama({ host: process.env.OLLAMA_HOST });

export const GREEDY = { temperature: 0, num_predict: 6 };

/** Print the scenario's result for the pytest driver and exit 0. */
export function report(result) {
  process.stdout.write(JSON.stringify(result));
}

/** Drain a streamed reply into an array of its parts. */
export async function collect(stream) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  return parts;
}
