// dsv32_ref.mjs - an independent JavaScript rendering of DeepSeek-V3.2's chat format, for
// checking frontier's built-in (src/tokenizer/chat_dsv32.c) where no Jinja oracle exists.
// Written from the format's description (docs/ARCH.md 8.1 and the layout of
// encoding_dsv32.py in huggingface/transformers), driven as vLLM drives it: `thinking` /
// `enable_thinking` / thinking_mode select thinking mode, request tools become a leading
// system message. Throws where the Python encoder asserts.
//
// The wording of the tool and response-format prompts is DeepSeek's and is not carried
// here: like frontier, this takes it from the checkpoint's encoding/encoding_dsv32.py (the
// text of which the caller passes as `encoding`; null when the checkpoint lacks it), reading
// the str constants TOOLS_SYSTEM_TEMPLATE and response_format_template and filling them as
// Python's str.format would. Only requests with tools or a response_format read it.

const BOS = '<｜begin▁of▁sentence｜>';
const EOS = '<｜end▁of▁sentence｜>';
const DSML = '｜DSML｜';

// Python's json.dumps(v, ensure_ascii=False): ", " and ": " separators; floats as repr.
function pyJson(v) {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (Number.isInteger(v) && Math.abs(v) < 1e17) return v.toFixed(0);
    let s = String(v); // shortest digits; convert JavaScript's exponent style to Python's
    const m = /^(-?)(\d)(?:\.(\d+))?e([+-])(\d+)$/.exec(s);
    const exp = m ? Number(m[4] + m[5]) : Math.floor(Math.log10(Math.abs(v)));
    if (exp < -4 || exp >= 16) {
      const e = m ? m : /^(-?)(\d)(?:\.(\d+))?e([+-])(\d+)$/.exec(v.toExponential());
      return `${e[1]}${e[2]}${e[3] ? '.' + e[3] : ''}e${e[4]}${e[5].padStart(2, '0')}`;
    }
    return s;
  }
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return '[' + v.map(pyJson).join(', ') + ']';
  return '{' + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ': ' + pyJson(x)).join(', ') + '}';
}

const truthy = (v) => !(v === undefined || v === null || v === false || v === 0 || v === '' ||
  (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v && !Array.isArray(v) && Object.keys(v).length === 0));

function text(c) {
  if (c === undefined || c === null) return '';
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return c.map((p) => {
    if (typeof p === 'string') return p;
    if (typeof p.text !== 'string' || (p.type !== undefined && p.type !== 'text')) throw new Error('non-text content part');
    return p.text;
  }).join('\n');
  throw new Error('bad content');
}

// ---- reading the prompt texts from encoding_dsv32.py ------------------------------------
// Just enough of Python's lexer to find a module-level `NAME = <str literal(s)>` (or
// `NAME: T = ...`; the last one wins) and decode it: quotes ' " ''' """, a u prefix,
// escapes, line continuations, adjacent literals, optionally in parentheses. Raw, f- and
// bytes literals and expressions are refused, as frontier refuses them.
const ENCODING_PY = 'encoding/encoding_dsv32.py';
const TOOLS_FIELDS = ['dsml_token', 'thinking_start_token', 'thinking_end_token', 'tool_schemas'];

// Index just past the literal whose opening quote is at i, or -1 if it never closes.
function literalEnd(src, i) {
  const q = src[i], triple = src.startsWith(q.repeat(3), i);
  for (let j = i + (triple ? 3 : 1); j < src.length; j++) {
    if (src[j] === '\\') j++;
    else if (triple ? src.startsWith(q.repeat(3), j) : src[j] === q) return j + (triple ? 3 : 1);
    else if (src[j] === '\n' && !triple) return -1;
  }
  return -1;
}

// Decode the (non-raw) literal at i: [text, index past it], or throws the reason.
function decodeLiteral(src, i) {
  const q = src[i], triple = src.startsWith(q.repeat(3), i);
  let out = '', j = i + (triple ? 3 : 1);
  const simple = { '\\': '\\', "'": "'", '"': '"', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\n': '' };
  for (;;) {
    if (j >= src.length || (src[j] === '\n' && !triple)) throw { at: i, why: 'a string literal does not close' };
    if (triple ? src.startsWith(q.repeat(3), j) : src[j] === q) return [out, j + (triple ? 3 : 1)];
    if (src[j] !== '\\') { out += src[j++]; continue; }
    if (j + 1 >= src.length) throw { at: i, why: 'a string literal does not close' };
    const e = src[j + 1];
    let m;
    if (e in simple) out += simple[e], j += 2;
    else if ((m = /^[0-7]{1,3}/.exec(src.slice(j + 1, j + 4)))) out += String.fromCodePoint(parseInt(m[0], 8)), j += 1 + m[0].length;
    else if (e === 'x' || e === 'u' || e === 'U') {
      const n = { x: 2, u: 4, U: 8 }[e], hex = src.slice(j + 2, j + 2 + n);
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) throw { at: j, why: 'a \\x, \\u or \\U escape lacks hex digits' };
      const cp = parseInt(hex, 16);
      if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw { at: j, why: 'an escape names no Unicode scalar value' };
      out += String.fromCodePoint(cp), j += 2 + n;
    } else if (e === 'N') throw { at: j, why: '\\N{...} escapes are not supported' };
    else out += '\\', j += 1; // unknown escapes stay as written
  }
}

function pyConstant(source, path, name, what) {
  const src = source.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  let value = -1, depth = 0;
  for (let i = 0, bol = true; i < src.length;) {
    if (bol && depth === 0 && src.startsWith(name, i) && !/[\w\u0080-\uffff]/.test(src[i + name.length] ?? '')) {
      const m = /[ \t]*(?::[^=\n#]*)?=(?!=)/y;
      m.lastIndex = i + name.length;
      if (m.exec(src)) value = m.lastIndex;
    }
    bol = false;
    const c = src[i];
    if (c === '#') while (i < src.length && src[i] !== '\n') i++;
    else if (c === '"' || c === "'") {
      const j = literalEnd(src, i);
      if (j < 0) throw new Error(`${path} line ${src.slice(0, i).split('\n').length}: a string literal does not close (read for ${name})`);
      i = j;
    } else if (c === '\\' && src[i + 1] === '\n') i += 2;
    else {
      if ('([{'.includes(c)) depth++;
      else if (')]}'.includes(c) && depth > 0) depth--;
      else if (c === '\n') bol = true;
      i++;
    }
  }
  if (value < 0) throw new Error(`${path} defines no ${name}, which DeepSeek-V3.2 ${what} are made from`);
  const line = (k) => src.slice(0, k).split('\n').length;
  let i = value, text = '', pieces = 0, paren = false, closed = false;
  try {
    for (;;) {
      const ws = paren ? /(?:[ \t\f\n]|\\\n|#[^\n]*)*/y : /(?:[ \t\f]|\\\n)*/y;
      ws.lastIndex = i, ws.exec(src), i = ws.lastIndex;
      if (!pieces && !paren && src[i] === '(') { paren = true, i++; continue; }
      if (paren && src[i] === ')') { closed = true, i++; break; }
      const p = /([A-Za-z]{0,2})(?=["'])/y;
      p.lastIndex = i;
      const m = p.exec(src);
      if (!m || !/^(?:[uU]|[rRbBfFtT]|[rR][bBfFtT]|[bBfFtT][rR])?$/.test(m[1])) break;
      if (/[fFtT]/.test(m[1])) throw { at: i, why: 'f-strings are not supported (the text must be a plain str literal)' };
      if (/[rR]/.test(m[1])) throw { at: i, why: 'raw string literals are not supported' };
      if (/[bB]/.test(m[1])) throw { at: i, why: 'it is a bytes literal, not a str' };
      const [t, next] = decodeLiteral(src, i + m[1].length);
      text += t, i = next, pieces++;
    }
    if (!pieces || paren !== closed) throw { at: i, why: 'it is not a string literal (nor adjacent literals in parentheses)' };
    const tail = /(?:[ \t\f]|\\\n)*/y;
    tail.lastIndex = i, tail.exec(src), i = tail.lastIndex;
    if (i < src.length && !'\n#;'.includes(src[i])) throw { at: i, why: 'it is an expression, not a plain string literal' };
  } catch (e) {
    if (e instanceof Error) throw e;
    throw new Error(`${path} line ${line(e.at)}: ${name}: ${e.why}`);
  }
  return text;
}

// tpl.format(**args), plain {name} fields only; {{ and }} are braces.
function pyFormat(tpl, args, path, name) {
  const known = Object.keys(args).map((k) => `{${k}}`).join(' ');
  return tpl.replace(/\{\{|\}\}|\{([^{}]*)\}|[{}]/g, (m, field) => {
    if (m === '{{' || m === '}}') return m[0];
    if (field === undefined) throw new Error(`${path}: ${name}: a single '${m}' (str.format needs '${m}${m}')`);
    const plain = /^[A-Za-z_]\w*$/.test(field);
    if (plain && Object.hasOwn(args, field)) return args[field];
    throw new Error(`${path}: ${name}: ${plain ? 'unknown' : 'unsupported'} placeholder {${field}} (it may use ${known})`);
  });
}

function promptText(enc, name, what) {
  if (enc.source === null || enc.source === undefined)
    throw new Error(`DeepSeek-V3.2 ${what} come from ${ENCODING_PY} in the checkpoint, which ${enc.dir} lacks`);
  return pyConstant(enc.source, `${enc.dir}/${ENCODING_PY}`, name, what);
}

function renderTools(enc, tools) {
  const tpl = promptText(enc, 'TOOLS_SYSTEM_TEMPLATE', 'tool prompts');
  const values = [DSML, '<think>', '</think>', tools.map((t) => pyJson(t.function ?? t)).join('\n')];
  return pyFormat(tpl, Object.fromEntries(TOOLS_FIELDS.map((k, i) => [k, values[i]])), `${enc.dir}/${ENCODING_PY}`, 'TOOLS_SYSTEM_TEMPLATE');
}

function responseFormat(enc, rf) {
  const tpl = promptText(enc, 'response_format_template', 'response-format prompts');
  return '\n\n' + pyFormat(tpl, { schema: pyJson(rf) }, `${enc.dir}/${ENCODING_PY}`, 'response_format_template');
}

function dsmlArgs(args) {
  const obj = typeof args === 'string' ? JSON.parse(args) : args;
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('arguments must be an object');
  return Object.entries(obj).map(([k, v]) =>
    `<${DSML}parameter name="${k}" string="${typeof v === 'string'}">${typeof v === 'string' ? v : pyJson(v)}</${DSML}parameter>`).join('\n');
}

// encoding: { dir, source } - the checkpoint directory (for messages) and the text of its
// encoding/encoding_dsv32.py, or source null when it has none.
export function renderDsv32(messages, tools, kwargs = {}, encoding = { dir: '.', source: null }, bos = BOS) {
  const thinking = truthy(kwargs.thinking) || truthy(kwargs.enable_thinking) || kwargs.thinking_mode === 'thinking';
  let msgs = [...messages];
  if (Array.isArray(tools) && tools.length) msgs.unshift({ role: 'system', tools });
  const findLastUser = () => msgs.reduce((last, m, i) => (m.role === 'user' || m.role === 'developer' ? i : last), -1);
  let lastUser = findLastUser();
  if (thinking && messages.length && messages.at(-1).role === 'user') { // vLLM's drop_thinking
    msgs = msgs.filter((m, i) => i >= lastUser || ['user', 'system', 'tool', 'assistant'].includes(m.role));
    lastUser = findLastUser();
  }
  let out = bos;
  msgs.forEach((m, i) => {
    const mt = truthy(m.tools) ? m.tools : null;
    if (m.role === 'system') {
      out += text(m.content);
      if (mt) out += '\n\n' + renderTools(encoding, mt);
      if (truthy(m.response_format)) out += responseFormat(encoding, m.response_format);
    } else if (m.role === 'user' || m.role === 'developer') {
      let body = text(m.content);
      if (m.role === 'developer') {
        if (!truthy(m.content)) throw new Error('developer message without content');
        body = (mt ? '\n\n' + renderTools(encoding, mt) : '') + (truthy(m.response_format) ? responseFormat(encoding, m.response_format) : '') +
          "\n\n# The user's message is: " + body;
      }
      out += '<｜User｜>' + body + '<｜Assistant｜>' + (i === lastUser && thinking ? '<think>' : '</think>');
    } else if (m.role === 'tool') {
      let prev = i - 1;
      while (prev >= 0 && msgs[prev].role === 'tool') prev--;
      const calls = prev >= 0 && msgs[prev].role === 'assistant' ? msgs[prev].tool_calls : undefined;
      const order = i - prev;
      if (!Array.isArray(calls) || calls.length < order) throw new Error('tool result without a matching tool call');
      if (order === 1) out += '\n\n<function_results>';
      out += '\n<result>' + text(m.content) + '</result>';
      if (order === calls.length) out += '\n</function_results>' + (i >= lastUser && thinking ? '\n\n<think>' : '\n\n</think>');
    } else if (m.role === 'assistant') {
      const calls = truthy(m.tool_calls) ? m.tool_calls : null;
      let s = '';
      if (thinking && i > lastUser) {
        if (!truthy(m.reasoning_content) && !calls) throw new Error('assistant after last user needs reasoning or tool calls');
        s += (truthy(m.reasoning_content) ? text(m.reasoning_content) : '') + '</think>';
      }
      s += text(m.content);
      if (calls) {
        s += `\n\n<${DSML}function_calls>\n` + calls.map((tc) => {
          const fn = tc.function ?? tc;
          if (typeof fn.name !== 'string') throw new Error('tool call without a name');
          return `<${DSML}invoke name="${fn.name}">\n${dsmlArgs(fn.arguments)}\n</${DSML}invoke>`;
        }).join('\n') + `\n</${DSML}function_calls>`;
      }
      out += s + EOS;
    } else {
      throw new Error(`unknown role ${m.role}`);
    }
  });
  return out;
}
