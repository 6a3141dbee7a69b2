// client.show(): capabilities and model_info as editors' model pickers read them.
import { client, report } from "./common.mjs";

const shown = await client.show({ model: "tiny" });
const arch = shown.model_info["general.architecture"];
report({
  arch,
  context_length: shown.model_info[`${arch}.context_length`],
  capabilities: shown.capabilities,
  family: shown.details.family,
  has_template: typeof shown.template === "string" && shown.template.length > 0,
});
