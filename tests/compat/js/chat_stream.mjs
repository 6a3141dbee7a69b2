// client.chat() streamed with a history and a system message, then an unload (keep_alive 0).
import { client, collect, GREEDY, report } from "./common.mjs";

const messages = [
  { role: "system", content: "be brief" },
  { role: "user", content: "hi" },
  { role: "assistant", content: "hello" },
  { role: "user", content: "again" },
];
const whole = await client.chat({ model: "tiny", messages, options: GREEDY });
const parts = await collect(
  await client.chat({ model: "tiny", messages, options: GREEDY, stream: true, keep_alive: "1m" }),
);
const unload = await client.chat({ model: "tiny", messages: [], keep_alive: 0 });
report({
  whole: whole.message.content,
  role: whole.message.role,
  streamed: parts.map((p) => p.message.content).join(""),
  done: parts[parts.length - 1].done,
  unload_reason: unload.done_reason,
});
