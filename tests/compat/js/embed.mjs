// client.embed() with a batch and client.embeddings() (legacy) on the real all-minilm.
import { client, report } from "./common.mjs";

const batch = await client.embed({ model: "all-minilm", input: ["cat", "a small cat"] });
const legacy = await client.embeddings({ model: "all-minilm", prompt: "cat" });
report({
  count: batch.embeddings.length,
  dims: batch.embeddings[0].length,
  first: batch.embeddings[0].slice(0, 4),
  legacy: legacy.embedding.slice(0, 4),
  prompt_eval_count: batch.prompt_eval_count,
});
