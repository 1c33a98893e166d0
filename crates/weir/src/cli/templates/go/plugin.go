// Package export_weir_plugin_handler is {{name}}, a Weir plugin: a prompt guard. It rejects a
// prompt that matches one of its rules (case-insensitive regular expressions from the config)
// with a 400 naming the rule, adds the header `x-{{name}}: checked` to every response it sees,
// and logs through the host. The other packages of this module, and wit_exports.go (which calls
// the functions below), are generated from wit/ by wit-bindgen's Go generator.
//
// Config (the plugin's `config` table, as JSON): {"rules": {"<name>": "<regex>", ...}}.
// Without `rules`, defaultRules apply.
package export_weir_plugin_handler

import (
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"sort"

	"wit_component/weir_plugin_log"
	"wit_component/weir_plugin_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

const pluginName = "{{name}}"

var defaultRules = map[string]string{
	"injection": "ignore (all )?previous instructions",
}

type rule struct {
	name string
	re   *regexp.Regexp
}

// Compiled once per instance in Init; instances are reused across calls.
var rules []rule

// gcEvery is how many hook calls run between two explicit garbage collections.
const gcEvery = 16

var calls int

// collect runs the garbage collector every gcEvery calls, at the end of a hook. Automatic GC is
// off (see Init): Go would otherwise start a collection inside `cabi_realloc` when the host
// hands back a string, the collector reads the clock through WASI, and the component model
// forbids calling an import from inside `cabi_realloc`, so the call traps.
func collect() {
	calls++
	if calls%gcEvery == 0 {
		runtime.GC()
	}
}

// Init parses the config and compiles the rules.
func Init(config string) witTypes.Result[weir_plugin_types.Hooks, string] {
	debug.SetGCPercent(-1)
	var cfg struct {
		Rules map[string]string `json:"rules"`
	}
	if config != "" {
		if err := json.Unmarshal([]byte(config), &cfg); err != nil {
			return witTypes.Err[weir_plugin_types.Hooks](fmt.Sprintf("invalid config: %v", err))
		}
	}
	if cfg.Rules == nil {
		cfg.Rules = defaultRules
	}
	names := make([]string, 0, len(cfg.Rules))
	for name := range cfg.Rules {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic order: the first matching rule is named
	rules = rules[:0]
	for _, name := range names {
		re, err := regexp.Compile("(?i)" + cfg.Rules[name])
		if err != nil {
			return witTypes.Err[weir_plugin_types.Hooks](fmt.Sprintf("invalid config: rule `%s`: %v", name, err))
		}
		rules = append(rules, rule{name, re})
	}
	weir_plugin_log.Log(weir_plugin_log.Level_Info, fmt.Sprintf("%s ready with %d rule(s)", pluginName, len(rules)))
	return witTypes.Ok[weir_plugin_types.Hooks, string](weir_plugin_types.Hooks_OnRequest | weir_plugin_types.Hooks_OnResponse)
}

// matchedRule returns the first rule matching any message's `content` (read through the host
// by JSON pointer), or "".
func matchedRule(req *weir_plugin_types.Request) string {
	for i := 0; ; i++ {
		raw := req.Get(fmt.Sprintf("/messages/%d/content", i))
		if raw.IsNone() {
			return ""
		}
		text := raw.Some()
		var s string
		if json.Unmarshal([]byte(text), &s) == nil {
			text = s
		} // else multi-part content: match the JSON text
		for _, r := range rules {
			if r.re.MatchString(text) {
				return r.name
			}
		}
	}
}

// OnRequest rejects a request whose prompt matches a rule.
func OnRequest(req *weir_plugin_types.Request) weir_plugin_types.RequestAction {
	defer req.Drop() // the Go bindings leave releasing borrowed handles to the hook
	defer collect()
	matched := matchedRule(req)
	if matched == "" {
		return weir_plugin_types.MakeRequestActionContinue()
	}
	weir_plugin_log.Log(weir_plugin_log.Level_Warn,
		fmt.Sprintf("%s rejected request %s: rule `%s` matched", pluginName, req.Id(), matched))
	return weir_plugin_types.MakeRequestActionReject(weir_plugin_types.Rejection{
		Status:  400,
		Message: fmt.Sprintf("prompt rejected by %s: it matches rule `%s`", pluginName, matched),
		Code:    witTypes.Some("prompt_rejected"),
	})
}

// OnResponse tags the response.
func OnResponse(req *weir_plugin_types.Request, resp *weir_plugin_types.Response) weir_plugin_types.ResponseAction {
	defer req.Drop()
	defer resp.Drop()
	defer collect()
	resp.SetHeader("x-"+pluginName, "checked")
	return weir_plugin_types.MakeResponseActionPass()
}

// OnStreamChunk passes chunks through (not declared in Init, so never called).
func OnStreamChunk(req *weir_plugin_types.Request, chunk []uint8) weir_plugin_types.ChunkAction {
	defer req.Drop()
	return weir_plugin_types.MakeChunkActionPass()
}
