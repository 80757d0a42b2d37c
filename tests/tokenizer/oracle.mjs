// oracle.mjs - the reference ids: transformers.js (tests/oracle/node_modules) encodes every
// corpus case with every tokenizer and prints one JSON object on stdout:
//   {"NAME": {"CASE": {"ids": [...], "ids_special": [...], "decoded": HEX, "decoded_skip": HEX}}}
// ids: add_special_tokens false (transformers.js does not rebuild the post-processor from
// tokenizer_config.json, so ids with special tokens are compared only where
// tokenizer.json's own post-processor adds them). decoded: decode(ids) with
// clean_up_tokenization_spaces off; decoded_skip: the same with skip_special_tokens. Both
// are given as the hex of their UTF-8 bytes, so NUL and friends survive any JSON reader.
// Cases that are not valid UTF-8 are left out (a JS string cannot hold them).
//
// usage: node oracle.mjs SPEC.json CORPUS_DIR
//   SPEC.json: [{"name": "...", "dir": "/abs/dir/with/tokenizer.json"}, ...]
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(path.join(here, '..', 'oracle', 'package.json'));
const { env, AutoTokenizer } = await import(require.resolve('@huggingface/transformers'));

const [specFile, corpusDir] = process.argv.slice(2);
const spec = JSON.parse(fs.readFileSync(specFile, 'utf8'));
const cases = fs.readdirSync(corpusDir).sort();
const strict = new TextDecoder('utf-8', { fatal: true });
const texts = {};
for (const c of cases) {
  try { texts[c] = strict.decode(fs.readFileSync(path.join(corpusDir, c))); } catch { /* invalid UTF-8 */ }
}

env.allowRemoteModels = false;
const out = {};
for (const { name, dir } of spec) {
  env.localModelPath = path.dirname(dir) + '/';
  const tok = await AutoTokenizer.from_pretrained(path.basename(dir));
  const res = {};
  for (const [c, text] of Object.entries(texts)) {
    const ids = tok.encode(text, { add_special_tokens: false });
    const ids_special = tok.encode(text, { add_special_tokens: true });
    const opts = { clean_up_tokenization_spaces: false };
    const decoded = ids.length ? tok.decode(ids, opts) : '';
    const decoded_skip = ids.length ? tok.decode(ids, { ...opts, skip_special_tokens: true }) : '';
    const hex = (s) => Buffer.from(s, 'utf8').toString('hex');
    res[c] = { ids, ids_special, decoded: hex(decoded), decoded_skip: hex(decoded_skip) };
  }
  out[name] = res;
}
process.stdout.write(JSON.stringify(out));
