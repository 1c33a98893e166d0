// {{name}}: a Weir plugin, a prompt guard. It rejects a prompt that matches one of its rules
// (case-insensitive POSIX extended regular expressions from the config) with a 400 naming the
// rule, adds the header `x-{{name}}: checked` to every response it sees, and logs through the
// host.
//
// Config (the plugin's `config` table, as JSON): {"rules": {"<name>": "<regex>", ...}}.
// Without `rules`, DEFAULT_RULES apply. bindings/plugin.{h,c} are generated from wit/ by
// wit-bindgen's C generator; strings returned to the host must be malloc'd
// (`plugin_string_dup`): the bindings free them after the call.

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/plugin.h"

#define NAME "{{name}}"
#define MAX_RULES 32

static const char *DEFAULT_RULES[][2] = {
    {"injection", "ignore (all )?previous instructions"},
};

// Compiled once per instance in `init`; instances are reused across calls.
static struct {
    char *name;
    regex_t re;
} rules[MAX_RULES];
static size_t n_rules;

// The bindings reference wit-bindgen's component-type object; build.sh adds that type
// information with `wasm-tools component embed` instead, so this stands in for the object.
void __component_type_object_force_link_plugin(void) {}

static void log_line(weir_plugin_log_level_t level, const char *msg) {
    plugin_string_t s;
    plugin_string_set(&s, msg);
    weir_plugin_log_log(level, &s);
}

// Decodes the JSON string starting at *p (which points at the opening quote) into a new
// NUL-terminated buffer and advances *p past it. \uXXXX escapes become '?' (rules are ASCII).
static char *json_string(const char **p, const char *end) {
    if (*p >= end || **p != '"') return NULL;
    const char *s = *p + 1;
    char *out = malloc((size_t)(end - s) + 1), *o = out;
    while (s < end && *s != '"') {
        if (*s != '\\') { *o++ = *s++; continue; }
        if (++s >= end) break;
        char c = *s++;
        switch (c) {
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'r': *o++ = '\r'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'u': *o++ = '?'; s += (end - s >= 4) ? 4 : end - s; break;
            default: *o++ = c;  // \" \\ \/
        }
    }
    if (s >= end) { free(out); return NULL; }
    *o = '\0';
    *p = s + 1;
    return out;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++;
    return p;
}

static bool add_rule(const char *name, const char *pattern, char *err, size_t err_len) {
    if (n_rules == MAX_RULES) { snprintf(err, err_len, "at most %d rules", MAX_RULES); return false; }
    int rc = regcomp(&rules[n_rules].re, pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, &rules[n_rules].re, why, sizeof why);
        snprintf(err, err_len, "invalid config: rule `%s`: %s", name, why);
        return false;
    }
    rules[n_rules++].name = strdup(name);
    return true;
}

// Reads the string-to-string object after "rules" in the config, if any.
static bool parse_config(const char *json, size_t len, char *err, size_t err_len) {
    const char *end = json + len, *p = json;
    const char *key = NULL;
    for (const char *q = json; q + 7 <= end; q++)
        if (memcmp(q, "\"rules\"", 7) == 0) { key = q + 7; break; }
    if (!key) {
        for (size_t i = 0; i < sizeof DEFAULT_RULES / sizeof *DEFAULT_RULES; i++)
            if (!add_rule(DEFAULT_RULES[i][0], DEFAULT_RULES[i][1], err, err_len)) return false;
        return true;
    }
    p = skip_ws(key, end);
    if (p < end && *p == ':') p = skip_ws(p + 1, end);
    if (p >= end || *p != '{') { snprintf(err, err_len, "invalid config: `rules` must be an object"); return false; }
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        char *name = json_string(&p, end);
        p = skip_ws(p, end);
        if (!name || p >= end || *p != ':') { free(name); snprintf(err, err_len, "invalid config: bad `rules`"); return false; }
        p = skip_ws(p + 1, end);
        char *pattern = json_string(&p, end);
        if (!pattern) { free(name); snprintf(err, err_len, "invalid config: rule values must be strings"); return false; }
        bool ok = add_rule(name, pattern, err, err_len);
        free(name);
        free(pattern);
        if (!ok) return false;
        p = skip_ws(p, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return true;
}

bool exports_weir_plugin_handler_init(plugin_string_t *config, exports_weir_plugin_handler_hooks_t *ret,
                                      plugin_string_t *err) {
    char why[256] = "";
    bool ok = parse_config((const char *)config->ptr, config->len, why, sizeof why);
    plugin_string_free(config);
    if (!ok) {
        plugin_string_dup(err, why);
        return false;
    }
    char msg[96];
    snprintf(msg, sizeof msg, NAME " ready with %zu rule(s)", n_rules);
    log_line(WEIR_PLUGIN_LOG_LEVEL_INFO, msg);
    *ret = WEIR_PLUGIN_TYPES_HOOKS_ON_REQUEST | WEIR_PLUGIN_TYPES_HOOKS_ON_RESPONSE;
    return true;
}

// The first rule matching any message's `content` (read through the host by JSON pointer).
static const char *matched_rule(exports_weir_plugin_handler_borrow_request_t req) {
    for (int i = 0;; i++) {
        char pointer[48];
        snprintf(pointer, sizeof pointer, "/messages/%d/content", i);
        plugin_string_t ptr, raw;
        plugin_string_set(&ptr, pointer);
        if (!weir_plugin_types_method_request_get(req, &ptr, &raw)) return NULL;
        const char *p = (const char *)raw.ptr, *end = p + raw.len;
        char *text = json_string(&p, end);
        if (!text) {  // not a string (multi-part content): match the JSON text
            text = malloc(raw.len + 1);
            memcpy(text, raw.ptr, raw.len);
            text[raw.len] = '\0';
        }
        plugin_string_free(&raw);
        const char *hit = NULL;
        for (size_t r = 0; r < n_rules && !hit; r++)
            if (regexec(&rules[r].re, text, 0, NULL, 0) == 0) hit = rules[r].name;
        free(text);
        if (hit) return hit;
    }
}

void exports_weir_plugin_handler_on_request(exports_weir_plugin_handler_borrow_request_t req,
                                            exports_weir_plugin_handler_request_action_t *ret) {
    const char *rule = matched_rule(req);
    if (!rule) {
        ret->tag = WEIR_PLUGIN_TYPES_REQUEST_ACTION_CONTINUE;
        return;
    }
    plugin_string_t id;
    weir_plugin_types_method_request_id(req, &id);
    char msg[512];
    snprintf(msg, sizeof msg, NAME " rejected request %.*s: rule `%s` matched", (int)id.len,
             (const char *)id.ptr, rule);
    plugin_string_free(&id);
    log_line(WEIR_PLUGIN_LOG_LEVEL_WARN, msg);
    snprintf(msg, sizeof msg, "prompt rejected by " NAME ": it matches rule `%s`", rule);
    ret->tag = WEIR_PLUGIN_TYPES_REQUEST_ACTION_REJECT;
    ret->val.reject.status = 400;
    plugin_string_dup(&ret->val.reject.message, msg);  // freed by the bindings after return
    ret->val.reject.code.is_some = true;
    plugin_string_dup(&ret->val.reject.code.val, "prompt_rejected");
}

void exports_weir_plugin_handler_on_response(exports_weir_plugin_handler_borrow_request_t req,
                                             exports_weir_plugin_handler_borrow_response_t resp,
                                             exports_weir_plugin_handler_response_action_t *ret) {
    (void)req;
    plugin_string_t name, value, err;
    plugin_string_set(&name, "x-" NAME);
    plugin_string_set(&value, "checked");
    if (!weir_plugin_types_method_response_set_header(resp, &name, &value, &err)) plugin_string_free(&err);
    ret->tag = WEIR_PLUGIN_TYPES_RESPONSE_ACTION_PASS;
}

void exports_weir_plugin_handler_on_stream_chunk(exports_weir_plugin_handler_borrow_request_t req,
                                                 plugin_list_u8_t *chunk,
                                                 exports_weir_plugin_handler_chunk_action_t *ret) {
    (void)req;  // not declared in `init`, so never called
    plugin_list_u8_free(chunk);
    ret->tag = WEIR_PLUGIN_TYPES_CHUNK_ACTION_PASS;
}
