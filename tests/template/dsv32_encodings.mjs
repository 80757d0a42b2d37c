// dsv32_encodings.mjs - made-up stand-ins for DeepSeek-V3.2's encoding/encoding_dsv32.py.
//
// The real file (shipped with the checkpoint) holds the wording of the tool and
// response-format prompts; frontier and dsv32_ref.mjs both read it at run time and carry no
// copy. These files have the same constant names (TOOLS_SYSTEM_TEMPLATE,
// response_format_template) and str.format fields, with wording invented for these tests, so
// that the reading (literals, escapes, continuations, concatenation, the last module-level
// assignment winning) and the filling (fields, doubled braces) are compared end to end.
// Each entry becomes one row of run_oracle.mjs's table, run over every conversation:
//   source    the file's text, or null for a checkpoint without the file
//   crlf/bom  write it with \r\n line ends / a UTF-8 byte order mark
//   fails     'tools' (conversations with tools fail) or 'any' (with tools or a
//             response_format), the error both renderers must report containing `error`.

export const encodings = [
  {
    name: 'made-up encoding file',
    source: String.raw`# A stand-in for encoding_dsv32.py written for frontier's tests (invented wording).
import json

TOOLS_SYSTEM_TEMPLATE = "superseded: the last module-level assignment wins"

NOTES = """
TOOLS_SYSTEM_TEMPLATE = 'inside another literal, so not an assignment'
"""

TOOLS_SYSTEM_TEMPLATE = """### Callable helpers
Emit <{dsml_token}function_calls> to use one;\tthen wait.
Quotes: \"double\", \'single\', a backslash \\ and a brace pair {{like this}} or }} alone.
A continued \
line, \x41\u00e9\U0001F600 and \101 (octal), a kept \d escape, and ''' inside.
Think inside {thinking_start_token}...{thinking_end_token} first.
Schemas, one per line:
{tool_schemas}
-- end of helpers --
"""


def render_tools(tools):
    TOOLS_SYSTEM_TEMPLATE = "a local name, not the module's"
    return TOOLS_SYSTEM_TEMPLATE.format(tool_schemas=json.dumps(tools))


response_format_template: str = (
    "#### Reply shape\n"  # a comment between the pieces
    'Match this JSON schema ({{strict}}):\n'
    "{schema}"
)
`,
  },
  {
    name: "made-up file: ''' and plain literals, CRLF",
    crlf: true,
    bom: true,
    source: String.raw`TOOLS_SYSTEM_TEMPLATE = u'''Helpers you may call, as <{dsml_token}invoke name="...">:
{tool_schemas}
Close with {thinking_end_token} when done.'''
response_format_template = 'Shape of the reply: {schema}'  # plain literal
`,
  },
  { name: 'no encoding file', source: null, fails: 'any', error: 'encoding/encoding_dsv32.py in the checkpoint, which' },
  {
    name: 'file without TOOLS_SYSTEM_TEMPLATE',
    source: String.raw`response_format_template = "Reply as {schema}"


def f():
    TOOLS_SYSTEM_TEMPLATE = "indented: not module level"
    print(TOOLS_SYSTEM_TEMPLATE)
`,
    fails: 'tools',
    error: 'defines no TOOLS_SYSTEM_TEMPLATE',
  },
  {
    name: 'unknown placeholder',
    source: String.raw`TOOLS_SYSTEM_TEMPLATE = "Use {dsml}invoke for these: {tool_schemas}"
response_format_template = "Reply as {schema}"
`,
    fails: 'tools',
    error: 'unknown placeholder {dsml}',
  },
  {
    name: 'raw string literal',
    source: String.raw`TOOLS_SYSTEM_TEMPLATE = r"""Tools: {tool_schemas}"""
response_format_template = "Reply as {schema}"
`,
    fails: 'tools',
    error: 'raw string literals are not supported',
  },
  {
    name: 'f-string',
    source: String.raw`TOOLS_SYSTEM_TEMPLATE = f"Tools: {{tool_schemas}}"
response_format_template = "Reply as {schema}"
`,
    fails: 'tools',
    error: 'f-strings are not supported',
  },
];
