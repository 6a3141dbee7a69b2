// client.generate() streamed and whole: the streamed parts must add up to the whole reply.
import { client, collect, GREEDY, report } from "./common.mjs";

const whole = await client.generate({ model: "tiny", prompt: "hello", options: GREEDY });
const parts = await collect(
  await client.generate({ model: "tiny", prompt: "hello", options: GREEDY, stream: true }),
);
const final = parts[parts.length - 1];
report({
  whole: whole.response,
  streamed: parts.map((p) => p.response).join(""),
  chunks: parts.length,
  done_reason: final.done_reason,
  eval_count: final.eval_count,
  total_duration: final.total_duration,
});
