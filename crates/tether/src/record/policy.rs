//! What is recorded: exclusions by model type, attribute, (type, attribute) and event, and
//! secret models, of which nothing is ever recorded: no change of theirs, no event they send,
//! and no value that refers to them.
//!
//! A type rule matches a type name exactly or by its last dotted component, so
//! `BrowserInfo` also matches Panel's `panel.models.browser.BrowserInfo`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A rule string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "bad recording rule {rule:?}: expected model:TYPE, attr:NAME, field:TYPE.ATTR, event:NAME, \
     secret:TYPE or max_value_bytes:N, separated by commas"
)]
pub struct PolicyError {
    /// The rule as written.
    pub rule: String,
}

/// Which user changes and UI events are written to the state log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Model types never recorded: facts about the browser, not choices.
    pub models: BTreeSet<String>,
    /// Attributes never recorded on any model: layout feedback from the browser.
    pub attrs: BTreeSet<String>,
    /// (type, attribute) pairs never recorded: secrets and computed values.
    pub fields: BTreeSet<(String, String)>,
    /// `bokeh_event` names never recorded.
    pub events: BTreeSet<String>,
    /// Model types that hold secrets: nothing they send, and no value naming them, is
    /// recorded (Bokeh's `PasswordInput` sends its value in `value`, `value_input`, and in a
    /// `value_submit` event on Enter).
    pub secrets: BTreeSet<String>,
    /// Values longer than this (serialised) are not recorded, so one upload cannot
    /// crowd every other choice out of the bounded log.
    pub max_value_bytes: usize,
}

/// Default `model:` exclusions.
/// `BrowserInfo` and `Location` describe the browser (dark mode, timezone, URL); a
/// restored session must take them from the browser it now runs in.
const DEFAULT_MODELS: &[&str] = &[
    "BrowserInfo",
    "Location",
    "panel.models.browser.BrowserInfo",
    "panel.models.location.Location",
];

/// Default `attr:` exclusions: read-only sizes BokehJS reports after layout
/// (captured: a Figure sends all four right after it is drawn).
const DEFAULT_ATTRS: &[&str] = &["inner_width", "inner_height", "outer_width", "outer_height"];

/// Default `field:` exclusions. Passwords are never written anywhere (Panel's
/// `PasswordInput` widget is Bokeh's `PasswordInput` model and sends both `value_input`
/// on each key and `value`). `FactorRange.start/end` are computed by BokehJS.
const DEFAULT_FIELDS: &[(&str, &str)] = &[
    ("PasswordInput", "value"),
    ("PasswordInput", "value_input"),
    ("FactorRange", "start"),
    ("FactorRange", "end"),
];

/// Default `event:` exclusions.
/// - `document_ready`: the replay's own session sends one; Panel runs `onload` on it.
/// - `connection_lost`, `client_reconnected`: facts about a connection.
/// - `lodstart`, `lodend`, `rangesupdate`: render bookkeeping; the ranges themselves
///   arrive as `ModelChanged` on the range models and are recorded.
/// - pointer streams (`mousemove`, `mouseenter`, `mouseleave`, `wheel`, `pan*`,
///   `pinch*`, `rotate*`): dozens a second, and meaningless without the view state of
///   the moment. Discrete gestures (`tap`, `doubletap`, `press`, `pressup`,
///   `selectiongeometry`, `reset`) and widget events (`button_click`,
///   `menu_item_click`, `value_submit`, `legend_item_click`, `axis_click`) are recorded.
const DEFAULT_EVENTS: &[&str] = &[
    "document_ready",
    "connection_lost",
    "client_reconnected",
    "lodstart",
    "lodend",
    "rangesupdate",
    "mousemove",
    "mouseenter",
    "mouseleave",
    "wheel",
    "pan",
    "panstart",
    "panend",
    "pinch",
    "pinchstart",
    "pinchend",
    "rotate",
    "rotatestart",
    "rotateend",
];

/// Default `secret:` types: Bokeh's (and Panel's) password input.
const DEFAULT_SECRETS: &[&str] = &["PasswordInput"];

/// Default [`Policy::max_value_bytes`]: 256 KiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256 * 1024;

impl Default for Policy {
    /// The exclusions documented on the `DEFAULT_*` lists above, and a 256 KiB value cap.
    fn default() -> Self {
        let owned = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Policy {
            models: owned(DEFAULT_MODELS),
            attrs: owned(DEFAULT_ATTRS),
            fields: DEFAULT_FIELDS
                .iter()
                .map(|(t, a)| (t.to_string(), a.to_string()))
                .collect(),
            events: owned(DEFAULT_EVENTS),
            secrets: owned(DEFAULT_SECRETS),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// The last dotted component of a type name.
fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

impl Policy {
    /// A policy that records everything (up to the default value cap).
    pub fn none() -> Policy {
        Policy {
            models: BTreeSet::new(),
            attrs: BTreeSet::new(),
            fields: BTreeSet::new(),
            events: BTreeSet::new(),
            secrets: BTreeSet::new(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    /// Add rules in text form, e.g.
    /// `"model:BrowserInfo,attr:inner_width,field:PasswordInput.value,event:mousemove"`.
    /// `max_value_bytes:N` sets the value cap. Blank items are ignored.
    pub fn extend_from_str(&mut self, rules: &str) -> Result<(), PolicyError> {
        for rule in rules.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = || PolicyError {
                rule: rule.to_owned(),
            };
            let (kind, value) = rule.split_once(':').ok_or_else(bad)?;
            let value = value.trim();
            if value.is_empty() {
                return Err(bad());
            }
            match kind.trim() {
                "model" => drop(self.models.insert(value.to_owned())),
                "attr" => drop(self.attrs.insert(value.to_owned())),
                "event" => drop(self.events.insert(value.to_owned())),
                "secret" => drop(self.secrets.insert(value.to_owned())),
                "field" => {
                    let (t, a) = value
                        .rsplit_once('.')
                        .filter(|(t, a)| !t.is_empty() && !a.is_empty())
                        .ok_or_else(bad)?;
                    self.fields.insert((t.to_owned(), a.to_owned()));
                }
                "max_value_bytes" => self.max_value_bytes = value.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        Ok(())
    }

    /// The default policy plus `rules` (the CLI's "extra exclusions").
    pub fn default_with(rules: &str) -> Result<Policy, PolicyError> {
        let mut policy = Policy::default();
        policy.extend_from_str(rules)?;
        Ok(policy)
    }

    /// Whether a type rule set matches this type name.
    fn type_in(set: &BTreeSet<String>, type_name: &str) -> bool {
        set.contains(type_name) || set.contains(short(type_name))
    }

    /// Whether models of this type hold secrets.
    pub fn is_secret(&self, type_name: &str) -> bool {
        Self::type_in(&self.secrets, type_name)
    }

    /// Whether a change of `attr` on a model of `type_name` is recorded.
    pub fn records_change(&self, type_name: &str, attr: &str) -> bool {
        if Self::type_in(&self.models, type_name)
            || self.is_secret(type_name)
            || self.attrs.contains(attr)
        {
            return false;
        }
        let field = |t: &str| self.fields.contains(&(t.to_owned(), attr.to_owned()));
        !(field(type_name) || field(short(type_name)))
    }

    /// Whether a `bokeh_event` of this name, from a model of this type (if any), is recorded.
    pub fn records_event(&self, name: &str, type_name: Option<&str>) -> bool {
        !self.events.contains(name)
            && !type_name.is_some_and(|t| Self::type_in(&self.models, t) || self.is_secret(t))
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    /// Rules only, on top of [`Policy::none`]; see [`Policy::default_with`] to add to the defaults.
    fn from_str(rules: &str) -> Result<Policy, PolicyError> {
        let mut policy = Policy::none();
        policy.extend_from_str(rules)?;
        Ok(policy)
    }
}

impl fmt::Display for Policy {
    /// The text form, which [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        items.extend(self.models.iter().map(|m| format!("model:{m}")));
        items.extend(self.attrs.iter().map(|a| format!("attr:{a}")));
        items.extend(self.fields.iter().map(|(t, a)| format!("field:{t}.{a}")));
        items.extend(self.events.iter().map(|e| format!("event:{e}")));
        items.extend(self.secrets.iter().map(|t| format!("secret:{t}")));
        items.push(format!("max_value_bytes:{}", self.max_value_bytes));
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_exclude_browser_facts_passwords_and_pointer_streams() {
        let p = Policy::default();
        assert!(!p.records_change("panel.models.browser.BrowserInfo", "dark_mode"));
        assert!(!p.records_change("panel.models.location.Location", "search"));
        assert!(!p.records_change("Figure", "inner_width"));
        assert!(!p.records_change("PasswordInput", "value"));
        assert!(!p.records_change("PasswordInput", "value_input"));
        assert!(p.records_change("Selection", "indices"));
        assert!(p.records_change("panel.models.widgets.TextInput", "value"));
        assert!(!p.records_event("document_ready", None));
        assert!(!p.records_event("mousemove", Some("Figure")));
        assert!(p.records_event("button_click", Some("panel.models.widgets.Button")));
        assert!(p.records_event("tap", Some("Figure")));
        // Nothing a password input sends, under any name.
        assert!(!p.records_change("PasswordInput", "disabled"));
        assert!(!p.records_event("value_submit", Some("PasswordInput")));
        assert!(p.records_event("value_submit", Some("TextInput")));
        assert!(p.is_secret("bokeh.models.widgets.inputs.PasswordInput"));
    }

    #[test]
    fn parses_rule_strings_and_round_trips() {
        let p: Policy = "model:Foo, attr:bar ,field:x.y.Z.value,event:tap,max_value_bytes:10,"
            .parse()
            .unwrap();
        assert!(!p.records_change("pkg.Foo", "anything"));
        assert!(!p.records_change("Other", "bar"));
        assert!(!p.records_change("x.y.Z", "value"));
        assert!(p.records_change("x.y.Z", "other"));
        assert!(!p.records_event("tap", None));
        assert_eq!(p.max_value_bytes, 10);
        assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        let d = Policy::default();
        assert_eq!(d.to_string().parse::<Policy>().unwrap(), d);
    }

    #[test]
    fn rejects_bad_rules() {
        for bad in [
            "model",
            "nope:x",
            "field:novalue",
            "field:.x",
            "model:",
            "max_value_bytes:-1",
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
        let mut p = Policy::default();
        assert!(p
            .extend_from_str("event:wheel,attr:scroll_position")
            .is_ok());
        assert!(!p.records_change("Column", "scroll_position"));
        assert!(Policy::default_with("oops").is_err());
    }
}
