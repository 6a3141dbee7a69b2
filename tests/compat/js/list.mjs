// client.list(), client.ps() and client.version(): what model pickers read.
import { client, report } from "./common.mjs";

const listed = await client.list();
const running = await client.ps();
const { version } = await client.version();
report({
  models: listed.models.map((m) => ({ model: m.model, digest: m.digest, format: m.details.format })),
  running: running.models.map((m) => m.model),
  version,
});
