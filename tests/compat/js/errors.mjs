// ResponseError for an unknown model: ollama-js throws with the server's error text and status.
import { client, report } from "./common.mjs";

try {
  await client.generate({ model: "no-such-model", prompt: "x" });
  report({ thrown: false });
} catch (error) {
  report({ thrown: true, name: error.name, status: error.status_code, message: error.message });
}
