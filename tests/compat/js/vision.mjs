// client.chat() and client.generate() with images: a file path, and the file's bytes.
import { readFileSync } from "node:fs";
import { client, GREEDY, report } from "./common.mjs";

const path = process.env.IMAGE_PATH;
const model = process.env.VISION_MODEL;
const ask = (images) =>
  client.chat({
    model,
    messages: [{ role: "user", content: "What colour is this?", images }],
    options: GREEDY,
  });
const byPath = await ask([path]);
const byBytes = await ask([new Uint8Array(readFileSync(path))]);
const generated = await client.generate({
  model,
  prompt: "What colour is this?",
  images: [path],
  options: GREEDY,
});
const shown = await client.show({ model });
report({
  by_path: byPath.message.content,
  by_bytes: byBytes.message.content,
  prompt_eval_count: byPath.prompt_eval_count,
  generated: generated.response,
  capabilities: shown.capabilities,
});
