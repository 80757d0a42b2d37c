/* test_jinja.c - the chat-template interpreter and chat formats.
 *
 * Constructs: each row renders a small template; the expected text was produced by the
 * reference implementation (@huggingface/jinja 0.5.11) and is checked byte for byte.
 * Then the deliberate differences from the reference, the limits against hostile
 * templates (huge ranges, endless recursion, output and memory blowup, self-reference),
 * error messages with line:column, the chat layer (template discovery in a checkpoint
 * directory, context variables) and the built-in DeepSeek-V3.2 format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "tokenizer/chat.h"
#include "tokenizer/jinja.h"

/* Render tpl with the JSON context ctx under lim (NULL: defaults). Returns the status;
 * *out (malloc'd) on success, err filled on failure. */
static fr_status render(const char *tpl, const char *ctx, const fr_jinja_limits *lim, char **out,
                        fr_error *err) {
    fr_jinja_template *t = NULL;
    cJSON *c = ctx ? cJSON_Parse(ctx) : NULL;
    *out = NULL;
    fr_status rc = fr_jinja_parse(tpl, strlen(tpl), &t, err);
    if (!rc) rc = fr_jinja_render(t, c, lim, out, NULL, err);
    fr_jinja_free(t);
    cJSON_Delete(c);
    return rc;
}

/* Expect success and exactly `want`. */
static void expect_text(const char *name, const char *tpl, const char *ctx, const char *want) {
    fr_error err = {0};
    char *out = NULL;
    fr_status rc = render(tpl, ctx, NULL, &out, &err);
    CHECK_MSG(rc == FR_OK, "%s: %s", name, err.msg);
    if (rc == FR_OK) CHECK_MSG(!strcmp(out, want), "%s:\n  got  [%s]\n  want [%s]", name, out, want);
    free(out);
}

/* Expect failure with `code` and a message containing each of the given pieces. */
static void expect_error(const char *name, const char *tpl, const fr_jinja_limits *lim, fr_status code,
                         const char *piece1, const char *piece2) {
    fr_error err = {0};
    char *out = NULL;
    clock_t t0 = clock();
    fr_status rc = render(tpl, NULL, lim, &out, &err);
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK_MSG(rc == code, "%s: status %s, want %s (%s)", name, fr_status_name(rc), fr_status_name(code),
              err.msg);
    CHECK_MSG(!piece1 || strstr(err.msg, piece1), "%s: message [%s] lacks [%s]", name, err.msg, piece1);
    CHECK_MSG(!piece2 || strstr(err.msg, piece2), "%s: message [%s] lacks [%s]", name, err.msg, piece2);
    CHECK_MSG(secs < 20, "%s: took %.1f s", name, secs);
    CHECK(out == NULL);
    free(out);
}

static const struct {
    const char *name, *tpl, *ctx, *want;
} constructs[] = {
    {"text", "plain text", "{}", "plain text"},
    {"output", "{{ 'a' }}{{ 1 }}{{ 1.0 }}{{ 0.5 }}{{ true }}{{ none }}{{ undefined_name }}", "{}",
     "a11.00.5true"},
    {"if_elif_else",
     "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %};{% endfor %}",
     "{}", "one;two;many;"},
    {"for_loop_vars",
     "{% for m in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }} {% endfor %}",
     "{}", "1032truefalse3b 2121falsefalse3ac 3210falsetrue3b "},
    {"for_else", "{% for x in [] %}x{% else %}empty{% endfor %}", "{}", "empty"},
    {"for_filter", "{% for x in [1, 2, 3, 4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}", "{}",
     "2/2 4/2 "},
    {"for_dict_items",
     "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
     "{\"d\": {\"a\": 1, \"b\": 2}}", "a=1;b=2;ab"},
    {"break_continue",
     "{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
     "{}", "023"},
    {"break_drops_iteration",
     "{% for x in [1, 2] %}a{{ x }}{% if x == 2 %}{% break %}{% endif %}b{% endfor %}", "{}", "a1b"},
    {"set_scoping",
     "{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{% if true %}{% set y = 3 %}{% endif %}{{ x }}{{ y }}",
     "{}", "13"},
    {"set_tuple_and_block", "{% set a, b = 1, 2 %}{% set c %}[{{ a + b }}]{% endset %}{{ c }}", "{}", "[3]"},
    {"namespace",
     "{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
     "{}", "3 012"},
    {"macro_defaults",
     "{% macro m(a, b='B', c=a ~ '!') %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 2) }} {{ m(c=3, a=4) }}",
     "{}", "1B1! 121! 4B3"},
    {"macro_varargs_kwargs",
     "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}", "{}",
     "1[2, 3]{\"k\": \"v\"}"},
    {"macro_recursion",
     "{% macro r(n) %}{% if n > 0 %}{{ n }}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(4) }}", "{}", "4321"},
    {"call_block",
     "{% macro wrap(t) %}<{{ t }}>{{ caller(5) }}</{{ t }}>{% endmacro %}{% call(v) wrap('b') %}v={{ v }}{% endcall %}",
     "{}", "<b>v=5</b>"},
    {"filter_block", "{% filter upper %}shout {{ 'this' }}{% endfilter %}", "{}", "SHOUT THIS"},
    {"comments", "a{# ignored #}b{#- trims -#}   c", "{}", "abc"},
    {"ws_control", "a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e", "{}", "abc d e"},
    {"trim_lstrip_blocks", "line\n    {% if true %}\n    body\n    {% endif %}\nend\n", "{}",
     "line\n    body\nend"},
    {"filters_strings",
     "{{ '  x  '|trim }}|{{ 'ab'|upper }}|{{ 'AB'|lower }}|{{ 'hello world'|title }}|{{ 'abc'|capitalize }}|{{ 'h\xc3"
     "\xa9"
     "llo'|length }}|{{ 'a-b'|replace('-', '+') }}|{{ 'x\\ny'|indent(2) }}|{{ 42|string }}",
     "{}", "x|AB|ab|Hello World|Abc|5|a+b|x\n  y|42"},
    {"filters_lists",
     "{{ [3, 1, 2]|sort }}|{{ [1, 2]|first }}|{{ [1, 2]|last }}|{{ [1, 2]|reverse }}|{{ [1, 2, 1]|unique }}|{{ ['a', 'b']|join('-') }}|{{ [1, 2]|length }}|{{ [1]|list }}|{{ [1, 'a']|string }}",
     "{}", "[1, 2, 3]|1|2|[2, 1]|[1, 2]|a-b|2|[1]|[1, \"a\"]"},
    {"filters_objects",
     "{{ l|selectattr('r', 'equalto', 'u')|list|length }}|{{ l|rejectattr('r', 'eq', 'u')|map(attribute='r')|join }}|{{ l|map(attribute='x', default='-')|join }}|{{ {'b': 1, 'a': 2}|dictsort }}|{{ {'a': 1}|items }}",
     "{\"l\": [{\"r\": \"u\", \"x\": 1}, {\"r\": \"a\"}]}", "1|a|1-|[[\"a\", 2], [\"b\", 1]]|[[\"a\", 1]]"},
    {"default_filter", "{{ x|default('d') }}|{{ ''|default('d', true) }}|{{ 0|default(1) }}", "{}", "d|d|0"},
    {"tojson",
     "{{ {'a': [1, 2.5, none, true], '\xc3"
     "\xa9"
     "': '\xc3"
     "\xbc"
     "\\n'}|tojson }}|{{ [1, [2]]|tojson(indent=2) }}|{{ '\xc3"
     "\xa9"
     "'|tojson(ensure_ascii=true) }}|{{ {'b': 1, 'a': 2}|tojson(separators=(',', ':'), sort_keys=true) }}",
     "{}",
     "{\"a\": [1, 2.5, null, true], \"\xc3"
     "\xa9"
     "\": \"\xc3"
     "\xbc"
     "\\n\"}|[\n  1,\n  [\n    2\n  ]\n]|\"\\u00e9\"|{\"a\":2,\"b\":1}"},
    {"numbers",
     "{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1 + 1.0 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 10 / 2 }} {{ 1 / 0 }}",
     "{}", "3.5 3 -4 1 -1 1024 0.5 2.0 0.30000000000000004 0.3333333333333333 5.0 Infinity"},
    {"comparisons_logic",
     "{{ 1 < 2 }}{{ 2 <= 1 }}{{ 'a' == 'a' }}{{ 1 != 1 }}{{ 1 == 1.0 }}{{ none == x }}{{ 'a' and 'b' }}{{ '' or 'e' }}{{ not [] }}",
     "{}", "truefalsetruefalsetruetruebetrue"},
    {"membership",
     "{{ 'b' in 'abc' }}{{ 'x' not in ['a'] }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}{{ 'a' in undefined_name }}",
     "{}", "truetruetruetruefalse"},
    {"concat",
     "{{ 'a' ~ 1 ~ 1.0 ~ true }}|{{ 'a' + 'b' }}|{{ 'n' + 1 }}|{{ [1, 2] ~ '' }}|{{ {'a': 1} ~ '' }}|{{ [1] + [2] }}",
     "{}", "a11true|ab|n1|1,2|[object Map]|[1, 2]"},
    {"inline_if",
     "{{ 'y' if true else 'n' }}{{ 'y' if false else 'n' }}{{ 'only' if false }}{{ 1 if false else 2 if true else 3 }}",
     "{}", "yn2"},
    {"tests",
     "{{ x is defined }}{{ y is undefined }}{{ none is none }}{{ 's' is string }}{{ 1.5 is number }}{{ {} is mapping }}{{ [] is iterable }}{{ 's' is iterable }}{{ 3 is odd }}{{ true is true }}{{ 0 is false }}{{ 'ab' is lower }}{{ [] is sequence }}",
     "{\"x\": 0}", "truetruetruetruetruetruetruetruetruetruefalsetruetrue"},
    {"string_methods",
     "{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}{{ ' s '.strip() }}|{{ ' s '.lstrip() }}|{{ ' s '.rstrip() }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'a,b'.split(',') }}{{ ' a  b '.split() }}{{ 'a,b,c'.split(',', 1) }}{{ 'aaa'.replace('a', 'b', 2) }}{{ 'hi there'.title() }}",
     "{}", "ABabs|s | s|truetrue[\"a\", \"b\"][\"a\", \"b\"][\"a\", \"b,c\"]bbaHi There"},
    {"dict_methods",
     "{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}{{ d.keys() }}{{ d.values() }}{{ d.items() }}",
     "{\"d\": {\"a\": 1, \"b\": [2]}}", "1dflt[\"a\", \"b\"][1, [2]][[\"a\", 1], [\"b\", [2]]]"},
    {"slicing",
     "{{ [1, 2, 3, 4][::-1] }}{{ [1, 2, 3, 4][1:] }}{{ [1, 2, 3, 4][:-1] }}{{ [1, 2, 3, 4][::2] }}{{ 'h\xc3"
     "\xa9"
     "llo\xf0"
     "\x9f"
     "\x98"
     "\x80"
     "'[::-1] }}{{ 'abc'[1:2] }}{{ 'abc'[-1] }}",
     "{}",
     "[4, 3, 2, 1][2, 3, 4][1, 2, 3][1, 3]\xf0"
     "\x9f"
     "\x98"
     "\x80"
     "oll\xc3"
     "\xa9"
     "hbc"},
    {"member_access",
     "{{ m.role }}{{ m['role'] }}{{ l[0] }}{{ l[-1] }}{{ l.0 }}{{ m.missing }}{{ m.missing.deeper }}{{ l|length }}{{ l.length }}",
     "{\"m\": {\"role\": \"user\"}, \"l\": [1, 2]}", "useruser12122"},
    {"range", "{{ range(3) }}{{ range(1, 7, 2) }}{{ range(3, 0, -1) }}", "{}", "[0, 1, 2][1, 3, 5][3, 2, 1]"},
    {"unicode_passthrough", "{{ m }}|{{ m|length }}|{{ m|upper }}",
     "{\"m\": \"\xe6"
     "\x97"
     "\xa5"
     "\xe6"
     "\x9c"
     "\xac"
     "\xe8"
     "\xaa"
     "\x9e"
     " \xf0"
     "\x9f"
     "\x98"
     "\x80"
     " \xc3"
     "\xb1"
     "\"}",
     "\xe6"
     "\x97"
     "\xa5"
     "\xe6"
     "\x9c"
     "\xac"
     "\xe8"
     "\xaa"
     "\x9e"
     " \xf0"
     "\x9f"
     "\x98"
     "\x80"
     " \xc3"
     "\xb1"
     "|8|\xe6"
     "\x97"
     "\xa5"
     "\xe6"
     "\x9c"
     "\xac"
     "\xe8"
     "\xaa"
     "\x9e"
     " \xf0"
     "\x9f"
     "\x98"
     "\x80"
     " \xc3"
     "\x91"
     ""},
    {"template_text_in_values", "{{ m }}", "{\"m\": \"{{ x }} {% if %} {# c #}\"}",
     "{{ x }} {% if %} {# c #}"},
    {"generation_tag", "a {% generation %}b{% endgeneration %} c", "{}", "a b c"},
    {"strftime_shape", "{{ strftime_now('%Y-%m-%d')|length }}", "{}", "10"},
};

static void test_constructs(void) {
    for (size_t i = 0; i < sizeof constructs / sizeof *constructs; i++)
        expect_text(constructs[i].name, constructs[i].tpl, constructs[i].ctx, constructs[i].want);
}

/* Where frontier deliberately differs from the reference (see jinja_builtins.c). */
static void test_differences(void) {
    /* Python's strip(chars); the reference ignores the argument and strips white space */
    expect_text("strip_chars",
                "[{{ '\n x \n'.strip('\n') }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}]", NULL,
                "[ x |axx|xxa]");
    expect_text("test_args", "{{ 1 is eq(1) }}{{ 2 is ne(1) }}{{ 'a' is in(['a']) }}{{ 'b' is in('abc') }}",
                NULL, "truetruetruetrue");
    expect_text("default_bare", "[{{ missing|default }}]", NULL, "[]");
    expect_text("first_empty", "{{ ([]|first) is undefined }}", NULL, "true");
}

static void test_limits(void) {
    fr_jinja_limits lim;
    fr_jinja_limits_default(&lim);
    CHECK(lim.max_output > 0 && lim.max_memory > lim.max_output && lim.max_steps > 0 && lim.max_depth > 0);

    expect_error("huge_range", "{% for i in range(1000000000) %}{% endfor %}", NULL, FR_ERR_CAPACITY,
                 "range()", "line 1:");
    expect_error("nested_loops",
                 "{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}", NULL,
                 FR_ERR_CAPACITY, "evaluation steps", NULL);
    expect_error("nested_ranges",
                 "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL,
                 FR_ERR_CAPACITY, "chat template line 1:", NULL);
    /* a kept loop object keeps its own values */
    expect_text(
        "loop_kept",
        "{% set ns = namespace() %}{% for x in ['a', 'b'] %}{% if loop.first %}{% set ns.l = loop %}{% endif %}{% endfor %}{{ ns.l.index }}{{ ns.l.last }}",
        NULL, "1false");
    expect_error("endless_recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL,
                 FR_ERR_CAPACITY, "nested more than", NULL);
    expect_error("mutual_recursion",
                 "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
                 NULL, FR_ERR_CAPACITY, "nested more than", NULL);
    expect_error(
        "string_doubling",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        NULL, FR_ERR_CAPACITY, "allowed", NULL);
    expect_error("self_reference", "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns|tojson }}", NULL,
                 FR_ERR_CAPACITY, "nested deeper", NULL);
    expect_error("print_self_reference", "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL,
                 FR_ERR_CAPACITY, "nested deeper", NULL);

    /* cheap steps over huge strings are charged by the byte */
    const char *big =
        "{% set ns = namespace(s='x') %}{% for i in range(24) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
    const char *ops[] = {"{% if 'y' in ns.s %}{% endif %}",  "{% set t = ns.s.split('y') %}",
                         "{% set t = ns.s == ns.s ~ '' %}",  "{% set t = ns.s|length %}",
                         "{% set t = ns.s[::-1] %}",         "{% set t = ns.s.strip('x') %}",
                         "{% set t = ns.s.upper() %}",       "{% set t = ns.s.replace('y', 'z') %}",
                         "{% set t = ns.s in [ns.s ~ ''] %}"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        char tpl[512];
        snprintf(tpl, sizeof tpl, "%s{%% for i in range(1000000) %%}%s{%% endfor %%}", big, ops[i]);
        expect_error(ops[i], tpl, NULL, FR_ERR_CAPACITY, "chat template line 1:", NULL);
    }

    fr_jinja_limits small = lim;
    small.max_output = 1 << 20;
    expect_error("output_cap", "{% for i in range(1000000) %}0123456789{% endfor %}", &small, FR_ERR_CAPACITY,
                 "1048576 bytes", NULL);
    small = lim;
    small.max_memory = 64 << 20;
    expect_error(
        "memory_cap",
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
        &small, FR_ERR_CAPACITY, "memory", NULL);
    small = lim;
    small.max_steps = 1000;
    expect_error("step_cap", "{% for i in range(500) %}{{ i }}{{ i }}{% endfor %}", &small, FR_ERR_CAPACITY,
                 "1000", NULL);
    small = lim;
    small.max_depth = 20;
    expect_error("depth_cap", "{% macro r(n) %}{% if n %}{{ r(n - 1) }}{% endif %}{% endmacro %}{{ r(100) }}",
                 &small, FR_ERR_CAPACITY, "20 levels", NULL);
    /* a legitimate recursion well inside the default depth */
    expect_text("deep_but_fine",
                "{% macro r(n) %}{% if n %}{{ r(n - 1) }}{% else %}done{% endif %}{% endmacro %}{{ r(40) }}",
                NULL, "done");

    /* parser nesting is bounded too */
    size_t n = 5000;
    char *deep = malloc(2 * n + 16);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    strcpy(deep + 3 + n, "1");
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    expect_error("deep_parens", deep, NULL, FR_ERR_FORMAT, "nested more than", "line 1:");
    free(deep);
    char *elifs = malloc(16 * 1000 + 64);
    strcpy(elifs, "{% if a %}");
    for (int i = 0; i < 1000; i++) strcat(elifs, "{% elif a %}");
    strcat(elifs, "{% endif %}");
    expect_error("long_elif_chain", elifs, NULL, FR_ERR_FORMAT, "nested more than", NULL);
    free(elifs);
}

static void test_errors(void) {
    expect_error("syntax_position", "line one\nline two {{ x + }}", NULL, FR_ERR_FORMAT, "line 2:17",
                 "syntax error");
    expect_error("unclosed_if", "{% for m in messages %}\n  {% if m %}\n{% endfor %}", NULL, FR_ERR_FORMAT,
                 "line 2:6", "found {% endfor %} where {% endif %} was expected");
    expect_error("stray_end", "a\n{% endif %}", NULL, FR_ERR_FORMAT, "line 2:4", "no block is open");
    expect_error("unclosed_for", "x\n{% for m in messages %}\nbody", NULL, FR_ERR_FORMAT, "line 2:4",
                 "endfor");
    expect_error("unknown_statement", "{% include 'x' %}", NULL, FR_ERR_FORMAT, "unknown statement 'include'",
                 NULL);
    expect_error("bad_char", "{{ a ; b }}", NULL, FR_ERR_FORMAT, "line 1:6", "';'");
    expect_error("unterminated_string", "{{ 'abc }}", NULL, FR_ERR_FORMAT, "unterminated string", NULL);
    expect_error("unclosed_comment", "a {# never closed", NULL, FR_ERR_FORMAT, "#}", NULL);
    expect_error("bad_escape", "{{ '\\q' }}", NULL, FR_ERR_FORMAT, "escaped character", NULL);
    expect_error("runtime_position", "\n\n  {{ 1 in 2 }}", NULL, FR_ERR_FORMAT, "line 3:8",
                 "Unknown operator");
    expect_error("raise_exception", "{% if true %}\n{{ raise_exception('Roles must alternate') }}{% endif %}",
                 NULL, FR_ERR_FORMAT, "raise_exception: Roles must alternate", "line 2:");
    expect_error("unknown_filter", "{{ 'a'|frobnicate }}", NULL, FR_ERR_FORMAT,
                 "Unknown StringValue filter: frobnicate", NULL);
    expect_error("unknown_test", "{{ 1 is frob }}", NULL, FR_ERR_FORMAT, "Unknown test: frob", NULL);
    expect_error("undefined_concat", "{{ missing ~ 'x' }}", NULL, FR_ERR_FORMAT, "undefined", NULL);
    expect_error("not_callable", "{{ 'a'.nope() }}", NULL, FR_ERR_FORMAT, "not a function", NULL);
    expect_error("break_outside_loop", "{% break %}", NULL, FR_ERR_FORMAT, "outside of a loop", NULL);
    expect_error("macro_extra_kwarg", "{% macro m(a) %}{% endmacro %}{{ m(1, b=2) }}", NULL, FR_ERR_FORMAT,
                 "no keyword argument 'b'", NULL);
    expect_error("assign_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", NULL, FR_ERR_FORMAT,
                 "non-namespace", NULL);
}

static void test_api(void) {
    fr_error err = {0};
    fr_jinja_template *t = NULL;
    const char *src = "{{ greeting }}, {{ names|join(' & ') }}!";
    CHECK(fr_jinja_parse(src, strlen(src), &t, &err) == FR_OK);
    cJSON *ctx = cJSON_Parse("{\"greeting\": \"Hi\", \"names\": [\"Ann\", \"Bo\"]}");
    for (int rep = 0; rep < 2; rep++) { /* renders keep no state between calls */
        char *out = NULL;
        size_t len = 0;
        CHECK(fr_jinja_render(t, ctx, NULL, &out, &len, &err) == FR_OK);
        CHECK(out && !strcmp(out, "Hi, Ann & Bo!") && len == strlen(out));
        free(out);
    }
    char *out = NULL;
    expect_text("no_context", "[{{ greeting }}]", NULL, "[]"); /* no context: variables are undefined */
    cJSON *bad = cJSON_CreateArray();
    CHECK(fr_jinja_render(t, bad, NULL, &out, NULL, &err) == FR_ERR_INVALID && out == NULL);
    cJSON_Delete(bad);
    cJSON_Delete(ctx);
    fr_jinja_free(t);
    fr_jinja_free(NULL);
    /* NUL bytes in a template are text like any other */
    const char nul[] = "a\0b{{ 1 }}";
    CHECK(fr_jinja_parse(nul, sizeof nul - 1, &t, &err) == FR_OK);
    size_t len = 0;
    CHECK(fr_jinja_render(t, NULL, NULL, &out, &len, &err) == FR_OK && len == 4 && !memcmp(out, "a\0b1", 4));
    free(out);
    fr_jinja_free(t);
    CHECK(fr_jinja_parse("x", (size_t)FR_JINJA_MAX_SOURCE + 1, &t, &err) == FR_ERR_FORMAT);
}

/* ---- chat layer ---------------------------------------------------------------------- */

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

/* Render messages (JSON) through the chat template in dir. */
static fr_status chat(const char *dir, const char *messages, const char *tools, const char *kwargs, bool gen,
                      char **out, fr_error *err) {
    fr_chat_template *t = NULL;
    cJSON *m = cJSON_Parse(messages), *tl = tools ? cJSON_Parse(tools) : NULL,
          *kw = kwargs ? cJSON_Parse(kwargs) : NULL;
    *out = NULL;
    fr_status rc = fr_chat_template_load(dir, &t, err);
    if (!rc) {
        fr_chat_request req = {.messages = m, .tools = tl, .add_generation_prompt = gen, .kwargs = kw};
        rc = fr_chat_render(t, &req, NULL, out, NULL, err);
    }
    fr_chat_template_free(t);
    cJSON_Delete(m);
    cJSON_Delete(tl);
    cJSON_Delete(kw);
    return rc;
}

static void expect_chat(const char *name, const char *dir, const char *messages, const char *tools,
                        const char *kwargs, bool gen, const char *want) {
    fr_error err = {0};
    char *out = NULL;
    fr_status rc = chat(dir, messages, tools, kwargs, gen, &out, &err);
    CHECK_MSG(rc == FR_OK, "%s: %s", name, err.msg);
    if (!rc) CHECK_MSG(!strcmp(out, want), "%s:\n  got  [%s]\n  want [%s]", name, out, want);
    free(out);
}

static void expect_chat_error(const char *name, const char *dir, const char *messages, const char *kwargs,
                              const char *piece) {
    fr_error err = {0};
    char *out = NULL;
    fr_status rc = chat(dir, messages, NULL, kwargs, true, &out, &err);
    CHECK_MSG(rc != FR_OK && strstr(err.msg, piece), "%s: status %d, message [%s], want [%s]", name, rc,
              err.msg, piece);
    free(out);
}

static void test_chat_dir(void) {
    char dir[] = "/tmp/frontier-jinja-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const char *msgs = "[{\"role\": \"user\", \"content\": \"hi\"}]";
    const char *echo = "{{ bos_token }}|{{ eos_token }}|{{ tools }}|{{ add_generation_prompt }}|{{ extra }}|"
                       "{% for m in messages %}{{ m.role }}:{{ m.content }}{% endfor %}";

    /* no template at all */
    write_file(dir, "tokenizer_config.json", "{\"bos_token\": \"<s>\"}");
    expect_chat_error("no_template", dir, msgs, NULL, "has no chat template");

    /* tokenizer_config.json string; tokens as string and AddedToken object; tools none */
    char cfg[1024];
    snprintf(
        cfg, sizeof cfg,
        "{\"bos_token\": \"<s>\", \"eos_token\": {\"__type\": \"AddedToken\", \"content\": \"</s>\"}, \"chat_template\": \"%s\"}",
        "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ add_generation_prompt }}|{{ extra }}|"
        "{% for m in messages %}{{ m.role }}:{{ m.content }}{% endfor %}");
    write_file(dir, "tokenizer_config.json", cfg);
    expect_chat("config_string", dir, msgs, NULL, "{\"extra\": 7}", true, "<s>|</s>|true|true|7|user:hi");
    expect_chat("kwargs_override_token", dir, msgs, NULL, "{\"bos_token\": \"[B]\"}", false,
                "[B]|</s>|true|false||user:hi");
    expect_chat_error("kwargs_reserved", dir, msgs, "{\"messages\": []}", "may not set");

    /* a list of named templates: "default" is used */
    write_file(
        dir, "tokenizer_config.json",
        "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"wrong\"}, {\"name\": \"default\", \"template\": \"right {{ messages|length }}\"}]}");
    expect_chat("config_list", dir, msgs, NULL, NULL, false, "right 1");
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    expect_chat_error("config_list_no_default", dir, msgs, NULL, "no entry named \"default\"");

    /* chat_template.jinja wins over tokenizer_config.json; bos undefined when null */
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": null, \"eos_token\": \"E\", \"chat_template\": \"config\"}");
    write_file(dir, "chat_template.jinja", echo);
    expect_chat("jinja_file", dir, msgs, "[{\"name\": \"t\"}]", NULL, false,
                "|E|[{\"name\": \"t\"}]|false||user:hi");

    /* template syntax errors name the file and the position */
    write_file(dir, "chat_template.jinja", "ok\n{% if x %}");
    expect_chat_error("syntax_error_file", dir, msgs, NULL,
                      "chat_template.jinja: chat template syntax error at line 2:4");

    /* config.json of DeepSeek-V3.2: a template present wins (V3.2-Exp), else the built-in */
    write_file(dir, "config.json", "{\"model_type\": \"deepseek_v32\"}");
    write_file(dir, "chat_template.jinja", "own {{ messages|length }}");
    expect_chat("v32_own_template", dir, msgs, NULL, NULL, true, "own 1");
    remove_file(dir, "chat_template.jinja");
    write_file(dir, "tokenizer_config.json", "{\"bos_token\": {\"content\": \"<B>\"}}");
    fr_error err = {0};
    fr_chat_template *t = NULL;
    CHECK(fr_chat_template_load(dir, &t, &err) == FR_OK && t && fr_chat_template_kind(t) == FR_CHAT_DSV32);
    fr_chat_template_free(t);
    expect_chat("v32_bos_from_config", dir, msgs, NULL, NULL, true,
                "<B><\xef\xbd\x9cUser\xef\xbd\x9c>hi<\xef\xbd\x9c"
                "Assistant\xef\xbd\x9c></think>");
    remove_file(dir, "tokenizer_config.json");
    expect_chat(
        "v32_builtin", dir, msgs, NULL, NULL, true,
        "<\xef\xbd\x9c"
        "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c><\xef\xbd\x9cUser\xef\xbd\x9c>hi<\xef\xbd\x9c"
        "Assistant\xef\xbd\x9c></think>");
    remove_file(dir, "config.json");
    rmdir(dir);
}

#define B                                                                                                    \
    "<\xef\xbd\x9c"                                                                                          \
    "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define E                                                                                                    \
    "<\xef\xbd\x9c"                                                                                          \
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define U "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define A                                                                                                    \
    "<\xef\xbd\x9c"                                                                                          \
    "Assistant\xef\xbd\x9c>"
#define DS                                                                                                   \
    "\xef\xbd\x9c"                                                                                           \
    "DSML\xef\xbd\x9c"

static fr_status v32_in(const char *dir, const char *messages, const char *tools, const char *kwargs,
                        char **out, fr_error *err) {
    cJSON *m = cJSON_Parse(messages), *t = tools ? cJSON_Parse(tools) : NULL,
          *k = kwargs ? cJSON_Parse(kwargs) : NULL;
    fr_chat_request req = {.messages = m, .tools = t, .kwargs = k};
    fr_status rc = fr_chat_dsv32_render(&req, dir, NULL, 1 << 20, out, NULL, err);
    cJSON_Delete(m);
    cJSON_Delete(t);
    cJSON_Delete(k);
    return rc;
}

static fr_status v32(const char *messages, const char *tools, const char *kwargs, char **out, fr_error *err) {
    return v32_in(NULL, messages, tools, kwargs, out, err);
}

static void expect_v32(const char *name, const char *messages, const char *tools, const char *kwargs,
                       const char *want) {
    fr_error err = {0};
    char *out = NULL;
    fr_status rc = v32(messages, tools, kwargs, &out, &err);
    CHECK_MSG(rc == FR_OK, "%s: %s", name, err.msg);
    if (!rc) CHECK_MSG(!strcmp(out, want), "%s:\n  got  [%s]\n  want [%s]", name, out, want);
    free(out);
}

static void expect_v32_error(const char *name, const char *messages, const char *kwargs, const char *piece) {
    fr_error err = {0};
    char *out = NULL;
    fr_status rc = v32(messages, NULL, kwargs, &out, &err);
    CHECK_MSG(rc != FR_OK && strstr(err.msg, piece), "%s: status %d, message [%s]", name, rc, err.msg);
    free(out);
}

static void test_dsv32(void) {
    const char *conv =
        "[{\"role\": \"user\", \"content\": \"hello\"},"
        "{\"role\": \"assistant\", \"content\": \"Hello!\", \"reasoning_content\": \"thinking...\"},"
        "{\"role\": \"user\", \"content\": \"1+1=?\"}]";
    /* docs/ARCH.md 8.1's example, and the same in chat mode */
    expect_v32("documented", conv, NULL, "{\"thinking\": true}",
               B U "hello" A "</think>Hello!" E U "1+1=?" A "<think>");
    expect_v32("chat_mode", conv, NULL, NULL, B U "hello" A "</think>Hello!" E U "1+1=?" A "</think>");
    expect_v32("enable_thinking", conv, NULL, "{\"enable_thinking\": true}",
               B U "hello" A "</think>Hello!" E U "1+1=?" A "<think>");
    /* system text, tool call with string and object arguments, two results */
    expect_v32(
        "tools_flow",
        "[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"q\"},"
        "{\"role\": \"assistant\", \"content\": null, \"reasoning_content\": \"r\", \"tool_calls\": ["
        "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": \\\"x\\\", \\\"n\\\": 2}\"}},"
        "{\"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": {\"l\": [1, 2.5, true]}}}]},"
        "{\"role\": \"tool\", \"content\": \"R1\"}, {\"role\": \"tool\", \"content\": \"R2\"}]",
        NULL, "{\"thinking\": true}",
        B "S" U "q" A "<think>r</think>\n\n<" DS "function_calls>\n<" DS "invoke name=\"f\">\n<" DS
          "parameter name=\"a\" string=\"true\">x</" DS "parameter>\n<" DS
          "parameter name=\"n\" string=\"false\">2</" DS "parameter>\n</" DS "invoke>\n<" DS
          "invoke name=\"g\">\n<" DS "parameter name=\"l\" string=\"false\">[1, 2.5, true]</" DS
          "parameter>\n</" DS "invoke>\n</" DS "function_calls>" E
          "\n\n<function_results>\n<result>R1</result>\n<result>R2</result>"
          "\n</function_results>\n\n<think>");
    /* request tools become a leading system message with the tool prompt, whose text comes
     * from the checkpoint's encoding/encoding_dsv32.py (here a made-up one); none: refused */
    fr_error err = {0};
    char *out = NULL;
    const char *q = "[{\"role\": \"user\", \"content\": \"q\"}]",
               *f = "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"x\": 1e-5}}]";
    CHECK(v32(q, f, NULL, &out, &err) == FR_ERR_UNSUPPORTED && !out && strstr(err.msg, "encoding_dsv32.py"));
    char dir[] = "/tmp/frontier-v32-XXXXXX", sub[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sub, sizeof sub, "%s/encoding", dir);
    CHECK(mkdir(sub, 0700) == 0);
    write_file(sub, "encoding_dsv32.py",
               "X = 1\nTOOLS_SYSTEM_TEMPLATE: str = '''T<{dsml_token}>{{\\t}}\\\n"
               "{thinking_end_token}[{tool_schemas}]'''\n");
    CHECK(v32_in(dir, q, f, NULL, &out, &err) == FR_OK);
    CHECK_MSG(out && !strcmp(out, B "\n\nT<" DS ">{\t}</think>[{\"name\": \"f\", \"x\": 1e-05}]" U "q" A
                                    "</think>"),
              "tool prompt [%s] %s", out ? out : "", err.msg);
    free(out);
    remove_file(sub, "encoding_dsv32.py");
    rmdir(sub);
    rmdir(dir);
    expect_v32_error("orphan_tool",
                     "[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"tool\", \"content\": \"r\"}]",
                     NULL, "message 1: a tool result needs");
    expect_v32_error("unknown_role", "[{\"role\": \"robot\", \"content\": \"q\"}]", NULL,
                     "unknown role \"robot\"");
    expect_v32_error(
        "thinking_needs_reasoning",
        "[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]",
        "{\"thinking\": true}", "needs reasoning_content or tool_calls");
    expect_v32_error(
        "bad_arguments",
        "[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"tool_calls\": [{\"function\": "
        "{\"name\": \"f\", \"arguments\": \"not json\"}}]}]",
        NULL, "arguments must be a JSON object");
    char *small = NULL;
    cJSON *m = cJSON_Parse("[{\"role\": \"user\", \"content\": \"0123456789\"}]");
    fr_chat_request req = {.messages = m};
    CHECK(fr_chat_dsv32_render(&req, NULL, NULL, 16, &small, NULL, &err) == FR_ERR_CAPACITY && small == NULL);
    cJSON_Delete(m);
}

int main(void) {
    test_constructs();
    test_differences();
    test_limits();
    test_errors();
    test_api();
    test_chat_dir();
    test_dsv32();
    return check_report("unit_jinja");
}
