// JS SDK side of issue 14 (run by tests/python/test_batches.py::test_js_sdk_content_and_list_iteration):
// `files.content(id)` returns a fetch Response whose text is the file, and `for await` over
// `batches.list()` visits every batch once and terminates. Prints one JSON line with what it saw.
import OpenAI from "openai";

const [baseURL, apiKey, fileId] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const text = await client.files.content(fileId).then((r) => r.text());
const ids = [];
for await (const b of client.batches.list({ limit: 2 })) {
  ids.push(b.id);
  if (ids.length > 1000) throw new Error("batches.list did not terminate");
}
console.log(JSON.stringify({ text, ids }));
