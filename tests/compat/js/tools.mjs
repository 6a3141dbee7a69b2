// client.chat() with tools: the parrot-tools model emits a real call; then a tool turn goes back.
import { client, collect, report } from "./common.mjs";

const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather in a city",
      parameters: {
        type: "object",
        properties: { city: { type: "string" } },
        required: ["city"],
      },
    },
  },
];
const messages = [{ role: "user", content: "What is the weather in Paris?" }];
const whole = await client.chat({ model: "parrot-tools", messages, tools });
const parts = await collect(
  await client.chat({ model: "parrot-tools", messages, tools, stream: true }),
);
const followUp = await client.chat({
  model: "parrot-tools",
  messages: [
    ...messages,
    whole.message,
    { role: "tool", content: "sunny", tool_name: "get_weather" },
  ],
  tools,
});
report({
  calls: whole.message.tool_calls.map((c) => c.function),
  streamed_calls: parts.flatMap((p) => p.message.tool_calls ?? []).map((c) => c.function),
  follow_up_done: followUp.done,
});
