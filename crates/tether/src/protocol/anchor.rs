//! What names a model for a person: the attributes an anchor is made of.
//!
//! A path names a model by position, which an edit of the app shifts. An anchor names it the
//! way its author did: its type, its `title`, `label`, `name` and `css_classes`, the title of a
//! Card's header, and the anchor of its nearest named ancestor. A model with no name of its own
//! is anchored by its path below that ancestor. Panel's generated names (`Column00290`, a
//! counter per process) differ in every session and name nothing.
//!
//! The textual form is stored with every recorded step, so it must not change:
//! `Slider[title="n"] in TabPanel[title="Settings"]`,
//! `Selection@source/selected in DataTabulator[name="orders"]`.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// Attributes that name a model, in the order an anchor lists them.
const NAMING: [&str; 4] = ["title", "label", "name", "css_classes"];
/// Longest name kept, in bytes; longer ones are cut at a character boundary.
const MAX_NAME: usize = 200;
/// The class Panel gives a Card header's title.
const CARD_TITLE: &str = "card-title";

/// The names of one model, when it has any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Names {
    /// Values of [`NAMING`], by position.
    naming: [Option<Box<str>>; 4],
    /// The text of a Card header's title (an HTML model with class `card-title`).
    title_text: Option<Box<str>>,
}

impl Names {
    /// The names among a definition's attributes; `None` when there are none.
    pub(crate) fn of_attributes(attrs: &BTreeMap<String, &RawValue>) -> Option<Box<Names>> {
        let mut names = Names::default();
        for (i, attr) in NAMING.iter().enumerate() {
            if let Some(raw) = attrs.get(*attr) {
                names.naming[i] = name_value(attr, raw);
            }
        }
        if names.is_card_title() {
            names.title_text = attrs.get("text").and_then(|raw| name_value("text", raw));
        }
        names.into_option()
    }

    /// `names` after the attribute `attr` got the value `raw`; unchanged when `attr` names
    /// nothing.
    pub(crate) fn changed(
        names: Option<Box<Names>>,
        attr: &str,
        raw: &RawValue,
    ) -> Option<Box<Names>> {
        let slot = NAMING.iter().position(|a| *a == attr);
        if slot.is_none() && attr != "text" {
            return names;
        }
        let mut names = names.map(|n| *n).unwrap_or_default();
        match slot {
            Some(i) => names.naming[i] = name_value(attr, raw),
            None if names.is_card_title() => names.title_text = name_value("text", raw),
            None => {}
        }
        names.into_option()
    }

    /// Whether any attribute may change a model's names (a cheap test before the work).
    pub(crate) fn names_attribute(attr: &str) -> bool {
        attr == "text" || NAMING.contains(&attr)
    }

    /// The text of a Card header's title, if this is one.
    pub(crate) fn title_text(&self) -> Option<&str> {
        self.title_text.as_deref()
    }

    /// `title="n",css_classes="solid"`: the names in [`NAMING`] order, values JSON-quoted.
    pub(crate) fn label(&self) -> Option<String> {
        let mut out = String::new();
        for (attr, value) in NAMING.iter().zip(&self.naming) {
            if let Some(value) = value {
                push_pair(&mut out, attr, value);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn is_card_title(&self) -> bool {
        self.naming[3]
            .as_deref()
            .is_some_and(|c| c.split(' ').any(|c| c == CARD_TITLE))
    }

    fn into_option(self) -> Option<Box<Names>> {
        (self != Names::default()).then(|| Box::new(self))
    }
}

/// Appends `attr="value"` to a label, comma-separated.
pub(crate) fn push_pair(out: &mut String, attr: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(attr);
    out.push('=');
    // A string always serialises.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// The name an attribute's value gives, if any: a non-empty string (not a generated
/// `name`), or for `css_classes` the classes joined by spaces.
fn name_value(attr: &str, raw: &RawValue) -> Option<Box<str>> {
    let text = if attr == "css_classes" {
        let classes: Vec<String> = serde_json::from_str(raw.get()).ok()?;
        classes.join(" ")
    } else {
        serde_json::from_str::<String>(raw.get()).ok()?
    };
    if text.is_empty() || (attr == "name" && generated(&text)) {
        return None;
    }
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(Box::from(&text[..end]))
}

/// A name Panel (param) generated: a class name and a counter of five or more digits
/// (`Column00290`, `Column100000`).
fn generated(name: &str) -> bool {
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let class = &name[..name.len() - digits];
    digits >= 5
        && class.starts_with(|c: char| c.is_ascii_alphabetic())
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn names(pairs: &[(&str, &str)]) -> Option<Box<Names>> {
        let raws: Vec<(String, Box<RawValue>)> =
            pairs.iter().map(|(k, v)| (k.to_string(), raw(v))).collect();
        let map: BTreeMap<String, &RawValue> =
            raws.iter().map(|(k, v)| (k.clone(), &**v)).collect();
        Names::of_attributes(&map)
    }

    #[test]
    fn generated_names_name_nothing() {
        assert!(generated("Column00290"));
        assert!(generated("Row_2x00001"));
        assert!(!generated("sidebar"));
        assert!(!generated("00001"), "no class name");
        assert!(!generated("Column0001"), "four digits");
        assert!(generated("Column100000"), "the counter passed 99999");
        assert_eq!(names(&[("name", r#""Column00290""#)]), None);
        let sidebar = names(&[("name", r#""sidebar""#)]).unwrap();
        assert_eq!(sidebar.label().unwrap(), r#"name="sidebar""#);
    }

    #[test]
    fn a_label_lists_names_in_a_fixed_order() {
        let button = names(&[
            ("css_classes", r#"["solid","big"]"#),
            ("label", r#""Plot""#),
            ("disabled", "false"),
        ])
        .unwrap();
        assert_eq!(
            button.label().unwrap(),
            r#"label="Plot",css_classes="solid big""#
        );
        assert_eq!(names(&[("title", "null"), ("css_classes", "[]")]), None);
    }

    #[test]
    fn only_a_card_title_is_named_by_its_text() {
        let title = names(&[
            ("css_classes", r#"["card-title"]"#),
            ("text", r#""&lt;h3&gt;Settings&lt;/h3&gt;""#),
        ])
        .unwrap();
        assert_eq!(title.title_text(), Some("&lt;h3&gt;Settings&lt;/h3&gt;"));
        let markdown =
            names(&[("css_classes", r#"["markdown"]"#), ("text", r#""output""#)]).unwrap();
        assert_eq!(markdown.title_text(), None);
        let renamed = Names::changed(Some(title), "text", &raw(r#""Other""#)).unwrap();
        assert_eq!(renamed.title_text(), Some("Other"));
    }

    #[test]
    fn a_change_to_a_naming_attribute_updates_the_names() {
        let slider = names(&[("title", r#""n""#)]);
        let unchanged = Names::changed(slider.clone(), "value", &raw("3"));
        assert_eq!(unchanged, slider);
        let retitled = Names::changed(slider, "title", &raw(r#""m""#)).unwrap();
        assert_eq!(retitled.label().unwrap(), r#"title="m""#);
        assert_eq!(Names::changed(Some(retitled), "title", &raw("null")), None);
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let long = format!("\"{}\"", "é".repeat(150));
        let n = names(&[("title", &long)]).unwrap();
        let label = n.label().unwrap();
        assert!(label.len() <= MAX_NAME + 10, "{}", label.len());
    }
}
