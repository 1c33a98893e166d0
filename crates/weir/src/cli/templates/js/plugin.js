// {{name}}: a Weir plugin, a prompt guard. It rejects a prompt that matches one of its rules
// (case-insensitive regular expressions from the config) with a 400 naming the rule, adds the
// header `x-{{name}}: checked` to every response it sees, and logs through the host.
//
// Config (the plugin's `config` table, as JSON): {"rules": {"<name>": "<regex>", ...}}.
// Without `rules`, DEFAULT_RULES apply.

// Each WIT function is a named export of its interface module.
import { log } from 'weir:plugin/log@0.2.1';

const NAME = '{{name}}';
const DEFAULT_RULES = { injection: 'ignore (all )?previous instructions' };

// Compiled once per instance in `init`; instances are reused across calls.
let rules = [];

// The text of each message's `content`, read through the host by JSON pointer.
function messages(req) {
  const texts = [];
  for (let i = 0; ; i++) {
    const raw = req.get(`/messages/${i}/content`);
    if (raw == null) return texts; // option none is `undefined`
    const value = JSON.parse(raw);
    texts.push(typeof value === 'string' ? value : raw); // multi-part content: its JSON text
  }
}

export const handler = {
  init(config) {
    let parsed;
    try {
      const table = JSON.parse(config || '{}').rules ?? DEFAULT_RULES;
      parsed = Object.entries(table).map(([name, pattern]) => [name, new RegExp(pattern, 'i')]);
    } catch (e) {
      throw `invalid config: ${e}`; // a thrown string is the `err` of result<hooks, string>
    }
    rules = parsed;
    log('info', `${NAME} ready with ${rules.length} rule(s)`);
    return { onRequest: true, onResponse: true, onStreamChunk: false };
  },

  onRequest(req) {
    for (const text of messages(req)) {
      for (const [name, re] of rules) {
        if (re.test(text)) {
          log('warn', `${NAME} rejected request ${req.id()}: rule \`${name}\` matched`);
          return {
            tag: 'reject',
            val: { status: 400, message: `prompt rejected by ${NAME}: it matches rule \`${name}\``, code: 'prompt_rejected' },
          };
        }
      }
    }
    return { tag: 'continue' };
  },

  onResponse(req, resp) {
    resp.setHeader(`x-${NAME}`, 'checked');
    return { tag: 'pass' };
  },

  onStreamChunk(req, chunk) {
    return { tag: 'pass' }; // not declared in `init`, so never called
  },
};
