// The official `openai` Node SDK against a running `frontier serve --api-key KEY`
// (started by test_sdk.py, which passes FR_URL, FR_KEY, FR_PROMPT_TEXT, FR_PROMPT_IDS and
// FR_SDK in the environment). Prints one ok/FAIL line per check; exit 1 on any failure.
import { pathToFileURL } from "node:url";

const { default: OpenAI, APIError, APIUserAbortError } = await import(pathToFileURL(process.env.FR_SDK).href);
const URL_ = process.env.FR_URL, KEY = process.env.FR_KEY;
const client = new OpenAI({ apiKey: KEY, baseURL: URL_ + "/v1", maxRetries: 0, timeout: 300000 });
let passed = 0, failed = 0;

function check(name, ok, detail = "") {
  ok ? passed++ : failed++;
  const d = typeof detail === "string" ? detail : JSON.stringify(detail);
  console.log(`${ok ? "ok  " : "FAIL"} ${name.padEnd(56)} ${(d ?? "").slice(0, 300)}`);
  return ok;
}

async function attempt(name, fn) {
  try {
    await fn();
  } catch (e) {
    check(name + " (threw)", false, `${e?.constructor?.name}: ${e?.message}`);
  }
}

async function metrics() {
  const r = await fetch(URL_ + "/metrics", { headers: { Authorization: "Bearer " + KEY } });
  const out = {};
  for (const line of (await r.text()).split("\n")) {
    const m = line.match(/^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
  }
  return out;
}

async function waitIdle(ms = 30000) {
  const end = Date.now() + ms;
  let m = {};
  while (Date.now() < end) {
    m = await metrics();
    if (m["vllm:num_requests_running"] === 0 && m["vllm:num_requests_waiting"] === 0 && m["vllm:kv_cache_usage_perc"] === 0)
      return [true, m];
    await new Promise((r) => setTimeout(r, 50));
  }
  return [false, m];
}

const MSG = [{ role: "user", content: "Who wrote the Psalms?" }];
let model = "x";

await attempt("models.list", async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  check("models.list returns the served model", ids.length >= 1 && typeof ids[0] === "string", ids);
  model = ids[0];
});

// Non-streaming and streaming give the same greedy text; usage on both.
let full = "";
await attempt("chat non-streaming", async () => {
  const r = await client.chat.completions.create({ model, messages: MSG, max_tokens: 40, temperature: 0, ignore_eos: true });
  const c = r.choices[0];
  full = c.message.content;
  check("chat: object, role, string content", r.object === "chat.completion" && c.message.role === "assistant" &&
        typeof full === "string", r.object);
  check("chat: finish_reason length with ignore_eos", c.finish_reason === "length", c.finish_reason);
  check("chat: usage", r.usage.completion_tokens === 40 && r.usage.prompt_tokens > 0 &&
        r.usage.total_tokens === r.usage.prompt_tokens + 40, r.usage);
});

await attempt("chat streaming", async () => {
  const stream = await client.chat.completions.create({ model, messages: MSG, max_tokens: 40, temperature: 0,
    ignore_eos: true, stream: true, stream_options: { include_usage: true } });
  let text = "", first = null, usage = null, finish = null, n = 0;
  for await (const chunk of stream) {
    n++;
    if (!first) first = chunk;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.delta?.content ?? "";
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  check("stream: first delta role assistant", first?.choices?.[0]?.delta?.role === "assistant", first);
  check("stream: text equals the non-streaming text", text === full, [text.slice(0, 80), full.slice(0, 80)]);
  check("stream: finish_reason length", finish === "length", finish);
  check("stream: include_usage gives usage", usage?.completion_tokens === 40, usage);
});

await attempt("stream without include_usage", async () => {
  const stream = await client.chat.completions.create({ model, messages: MSG, max_tokens: 5, temperature: 0, stream: true });
  let usage = false;
  for await (const chunk of stream) if (chunk.usage) usage = true;
  check("stream without include_usage: no usage", !usage);
});

await attempt("max_tokens", async () => {
  const r = await client.chat.completions.create({ model, messages: MSG, max_tokens: 3, temperature: 0, ignore_eos: true });
  check("max_tokens 3 -> finish_reason length, 3 tokens", r.choices[0].finish_reason === "length" &&
        r.usage.completion_tokens === 3, [r.choices[0].finish_reason, r.usage]);
});

// Stop string: a piece of the greedy text from the middle; the answer must end right before it.
await attempt("stop strings", async () => {
  const chars = [...full];
  let at = -1;
  for (let i = 8; i + 3 <= chars.length; i++) {
    const w = chars.slice(i, i + 3).join("");
    if (!w.includes("\uFFFD") && w.trim().length === 3) { at = i; break; }
  }
  if (at < 0) return check("stop: found a stop string in the greedy text", false, full);
  const stop = chars.slice(at, at + 3).join("");
  const want = full.slice(0, full.indexOf(stop));
  const r = await client.chat.completions.create({ model, messages: MSG, max_tokens: 40, temperature: 0, ignore_eos: true,
    stop: [stop, "\u0000never"] });
  check("stop: output ends before the stop string", r.choices[0].message.content === want,
        [stop, r.choices[0].message.content, want]);
  check("stop: finish_reason stop", r.choices[0].finish_reason === "stop", r.choices[0].finish_reason);
  const stream = await client.chat.completions.create({ model, messages: MSG, max_tokens: 40, temperature: 0,
    ignore_eos: true, stop, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream)
    for (const ch of chunk.choices) { text += ch.delta?.content ?? ""; if (ch.finish_reason) finish = ch.finish_reason; }
  check("stop (stream): same text, stop string absent, finish stop", text === want && !text.includes(stop) &&
        finish === "stop", [text, finish]);
});

await attempt("logprobs", async () => {
  const r = await client.chat.completions.create({ model, messages: MSG, max_tokens: 6, temperature: 0, ignore_eos: true,
    logprobs: true, top_logprobs: 3 });
  const lp = r.choices[0].logprobs?.content ?? [];
  check("logprobs: one entry per token", lp.length === 6, lp.length);
  check("logprobs: token, logprob <= 0, bytes, 3 top_logprobs", lp.length > 0 && lp.every((e) =>
    typeof e.token === "string" && e.logprob <= 0 && Array.isArray(e.bytes) && e.top_logprobs.length === 3), lp[0]);
  check("logprobs: greedy token is the most likely", lp.length > 0 && lp.every((e) =>
    Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-4), lp.map((e) => [e.logprob, e.top_logprobs[0]?.logprob]));
  const tokens = lp.map((e) => e.token).join("");
  check("logprobs: tokens spell the content", tokens === r.choices[0].message.content || tokens.includes("\uFFFD") ||
        r.choices[0].message.content.includes("\uFFFD"), [tokens, r.choices[0].message.content]);
  const c = await client.completions.create({ model, prompt: "In the beginning", max_tokens: 4, temperature: 0,
    ignore_eos: true, logprobs: 2 });
  const l = c.choices[0].logprobs;
  check("completions logprobs: tokens/token_logprobs/top_logprobs/text_offset", l && l.tokens.length === 4 &&
        l.token_logprobs.length === 4 && l.top_logprobs.length === 4 && l.text_offset.length === 4, l);
});

// Abort mid-stream: the request is gone from the server, which keeps serving.
await attempt("abort", async () => {
  const [idle0] = await waitIdle();
  const g0 = (await metrics())["vllm:generation_tokens_total"] ?? 0;
  const ac = new AbortController();
  const stream = await client.chat.completions.create({ model, messages: MSG, max_tokens: 900, temperature: 0,
    ignore_eos: true, stream: true }, { signal: ac.signal });
  let n = 0, aborted = false;
  try {
    for await (const chunk of stream) {
      if (++n === 3) ac.abort();
    }
  } catch (e) {
    aborted = e instanceof APIUserAbortError || e?.name === "AbortError";
  }
  // The SDK ends the iteration quietly on abort (or raises its abort error).
  check("abort: the stream stopped at the abort", aborted || (n >= 3 && n < 100), `chunks ${n}`);
  const [idle, m] = await waitIdle();
  const g1 = m["vllm:generation_tokens_total"] ?? 0;
  check("abort: /metrics back to 0 running/waiting, KV 0", idle0 && idle,
        [m["vllm:num_requests_running"], m["vllm:num_requests_waiting"], m["vllm:kv_cache_usage_perc"]]);
  check("abort: generation stopped early", g1 - g0 < 900, `${g1 - g0} of 900 tokens`);
  const r = await client.chat.completions.create({ model, messages: MSG, max_tokens: 4, temperature: 0 });
  check("abort: the server keeps serving", r.choices[0].message.content !== undefined, r.usage);
});

await attempt("completions", async () => {
  const ids = process.env.FR_PROMPT_IDS.split(",").map(Number);
  const a = await client.completions.create({ model, prompt: process.env.FR_PROMPT_TEXT, max_tokens: 8, temperature: 0,
    ignore_eos: true });
  const b = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0, ignore_eos: true });
  check("completions: string prompt", a.object === "text_completion" && typeof a.choices[0].text === "string" &&
        a.usage.completion_tokens === 8, a.usage);
  check("completions: token-id prompt", typeof b.choices[0].text === "string" && b.usage.prompt_tokens === ids.length &&
        b.usage.completion_tokens === 8, b.usage);
  check("completions: same text from the string and its ids", a.choices[0].text === b.choices[0].text &&
        a.usage.prompt_tokens === b.usage.prompt_tokens, [a.choices[0].text, b.choices[0].text, a.usage, b.usage]);
  const s = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0, ignore_eos: true,
    stream: true });
  let text = "";
  for await (const chunk of s) text += chunk.choices[0]?.text ?? "";
  check("completions: streamed text equals non-streamed", text === b.choices[0].text, [text, b.choices[0].text]);
});

await attempt("errors", async () => {
  try {
    await client.chat.completions.create({ model, messages: MSG, temperature: -1 });
    check("temperature -1 -> APIError 400", false, "no error");
  } catch (e) {
    check("temperature -1 -> APIError 400", e instanceof APIError && e.status === 400 && e.message.length > 0,
          `${e?.constructor?.name} ${e?.status} ${e?.message}`);
    check("400 error has type and param fields", e.type !== undefined, [e.type, e.param, e.code]);
  }
  const bad = new OpenAI({ apiKey: "sk-wrong", baseURL: URL_ + "/v1", maxRetries: 0 });
  try {
    await bad.models.list();
    check("wrong apiKey -> APIError 401", false, "no error");
  } catch (e) {
    check("wrong apiKey -> APIError 401", e instanceof APIError && e.status === 401, `${e?.constructor?.name} ${e?.status} ${e?.message}`);
  }
  try {
    await bad.chat.completions.create({ model, messages: MSG, max_tokens: 2 });
    check("wrong apiKey on chat -> 401", false, "no error");
  } catch (e) {
    check("wrong apiKey on chat -> 401", e instanceof APIError && e.status === 401, `${e?.status} ${e?.message}`);
  }
  try {
    await client.completions.create({ model, prompt: Array(5000).fill(100), max_tokens: 2 });
    check("prompt over the context -> 400", false, "no error");
  } catch (e) {
    check("prompt over the context -> 400 context_length_exceeded", e instanceof APIError && e.status === 400 &&
          e.code === "context_length_exceeded", `${e?.status} ${e?.code} ${e?.message}`);
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
