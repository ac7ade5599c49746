//! Keybindings as data.
//!
//! [`Action`] is the typed list of everything a key can do; each action has a
//! name (its key in `keymap.toml`), a description (its line in the help
//! overlay) and default keys. [`Keymap`] maps [`Key`]s to actions, starting
//! from the defaults and overridden per action from `<home>/keymap.toml`:
//!
//! ```toml
//! upload = ["u", "ctrl-u"]   # replaces the defaults of `upload`
//! quit = "Q"                 # one key may be a plain string
//! ```
//!
//! The help overlay is generated from the [`Keymap`] in force, so it always
//! shows what is really bound. `assets/keymap.toml` documents every action
//! with its defaults; a test keeps it in step with [`Action::ALL`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Everything a key can ask for. Modal input (typing a filter, answering a
/// confirmation) is not here: those keys are fixed by the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quit,
    Help,
    NextPane,
    PrevPane,
    ShowLog,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Open,
    Parent,
    Select,
    Filter,
    ToggleHidden,
    Upload,
    Download,
    RefreshRemote,
    PauseResume,
    Cancel,
    Retry,
    PriorityUp,
    PriorityDown,
    CycleView,
    ViewActive,
    ViewFailed,
    ViewCompleted,
    ViewAll,
    /// Remove a finished transfer from the list (`pigeon forget`).
    Forget,
    /// The chunk map: colour chunks by state, or by the link that carried
    /// them (when several did).
    ChunkColours,
}

/// Where an action shows up in the help overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Global,
    Move,
    Files,
    Queue,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Global,
        Section::Move,
        Section::Files,
        Section::Queue,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Section::Global => "Global",
            Section::Move => "Moving around",
            Section::Files => "Files and Remote",
            Section::Queue => "Queue",
        }
    }
}

impl Action {
    pub const ALL: [Action; 31] = [
        Action::Quit,
        Action::Help,
        Action::NextPane,
        Action::PrevPane,
        Action::ShowLog,
        Action::Up,
        Action::Down,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::Open,
        Action::Parent,
        Action::Select,
        Action::Filter,
        Action::ToggleHidden,
        Action::Upload,
        Action::Download,
        Action::RefreshRemote,
        Action::PauseResume,
        Action::Cancel,
        Action::Retry,
        Action::PriorityUp,
        Action::PriorityDown,
        Action::Forget,
        Action::CycleView,
        Action::ViewActive,
        Action::ViewFailed,
        Action::ViewCompleted,
        Action::ViewAll,
        Action::ChunkColours,
    ];

    /// The action's key in `keymap.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Help => "help",
            Action::NextPane => "next_pane",
            Action::PrevPane => "prev_pane",
            Action::ShowLog => "show_log",
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::Open => "open",
            Action::Parent => "parent",
            Action::Select => "select",
            Action::Filter => "filter",
            Action::ToggleHidden => "toggle_hidden",
            Action::Upload => "upload",
            Action::Download => "download",
            Action::RefreshRemote => "refresh_remote",
            Action::PauseResume => "pause_resume",
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::PriorityUp => "priority_up",
            Action::PriorityDown => "priority_down",
            Action::CycleView => "cycle_view",
            Action::ViewActive => "view_active",
            Action::ViewFailed => "view_failed",
            Action::ViewCompleted => "view_completed",
            Action::ViewAll => "view_all",
            Action::Forget => "forget",
            Action::ChunkColours => "chunk_colours",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// One line for the help overlay.
    pub fn description(self) -> &'static str {
        match self {
            Action::Quit => "quit (transfers stay queued)",
            Action::Help => "show or hide this help",
            Action::NextPane => "next pane",
            Action::PrevPane => "previous pane",
            Action::ShowLog => "show the event log, every line whole",
            Action::Up => "move up",
            Action::Down => "move down",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::Top => "first entry",
            Action::Bottom => "last entry",
            Action::Open => "open folder; a transfer's details",
            Action::Parent => "parent folder",
            Action::Select => "select / unselect",
            Action::Filter => "filter by typing (Esc clears)",
            Action::ToggleHidden => "show / hide hidden files",
            Action::Upload => "upload selection to Remote",
            Action::Download => "download Remote selection here",
            Action::RefreshRemote => "refresh the Remote listing",
            Action::PauseResume => "pause / resume transfer",
            Action::Cancel => "cancel transfer (asks first)",
            Action::Retry => "retry failed transfer",
            Action::PriorityUp => "move transfer up the queue",
            Action::PriorityDown => "move transfer down the queue",
            Action::CycleView => "next queue view",
            Action::ViewActive => "queue view: active",
            Action::ViewFailed => "queue view: failed",
            Action::ViewCompleted => "queue view: completed",
            Action::ViewAll => "queue view: all",
            Action::Forget => "remove a finished transfer from the list",
            Action::ChunkColours => "chunk map by state / by link",
        }
    }

    pub fn section(self) -> Section {
        use Action::*;
        match self {
            Quit | Help | NextPane | PrevPane | ShowLog => Section::Global,
            Up | Down | PageUp | PageDown | Top | Bottom | Open | Parent => Section::Move,
            Select | Filter | ToggleHidden | Upload | Download | RefreshRemote => Section::Files,
            PauseResume | Cancel | Retry | PriorityUp | PriorityDown | Forget | CycleView
            | ViewActive | ViewFailed | ViewCompleted | ViewAll | ChunkColours => Section::Queue,
        }
    }

    pub fn default_keys(self) -> &'static [&'static str] {
        match self {
            Action::Quit => &["q", "ctrl-c"],
            Action::Help => &["?"],
            Action::NextPane => &["tab"],
            Action::PrevPane => &["shift-tab"],
            Action::ShowLog => &["L"],
            Action::Up => &["up", "k"],
            Action::Down => &["down", "j"],
            Action::PageUp => &["pageup"],
            Action::PageDown => &["pagedown"],
            Action::Top => &["home", "g"],
            Action::Bottom => &["end", "G"],
            Action::Open => &["enter", "right", "l"],
            Action::Parent => &["backspace", "left", "h"],
            Action::Select => &["space"],
            Action::Filter => &["/"],
            Action::ToggleHidden => &["."],
            Action::Upload => &["u"],
            Action::Download => &["d"],
            Action::RefreshRemote => &["R"],
            Action::PauseResume => &["p"],
            Action::Cancel => &["x"],
            Action::Retry => &["r"],
            Action::PriorityUp => &["K"],
            Action::PriorityDown => &["J"],
            Action::CycleView => &["v"],
            Action::ViewActive => &["1"],
            Action::ViewFailed => &["2"],
            Action::ViewCompleted => &["3"],
            Action::ViewAll => &["4"],
            Action::Forget => &["delete", "X"],
            Action::ChunkColours => &["c"],
        }
    }
}

/// One key press as the keymap sees it: a code and the modifiers that
/// matter. Shift is folded into the character (`K`, not `shift-k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    code: KeyCode,
    modifiers: KeyModifiers,
}

impl Key {
    pub fn new(code: KeyCode, modifiers: KeyModifiers) -> Self {
        let mut modifiers =
            modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match code {
            KeyCode::Char(c) => {
                modifiers.remove(KeyModifiers::SHIFT);
                if modifiers.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            KeyCode::BackTab => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, modifiers }
    }

    pub fn from_event(event: &KeyEvent) -> Self {
        Key::new(event.code, event.modifiers)
    }

    /// Parse the `keymap.toml` spelling: `q`, `K`, `?`, `ctrl-c`, `alt-x`,
    /// `shift-tab`, `enter`, `esc`, `space`, `up`, `pagedown`, `f5`.
    pub fn parse(text: &str) -> Result<Key, String> {
        let mut rest = text;
        let mut modifiers = KeyModifiers::NONE;
        // A one-character key is itself, even "-".
        while rest.chars().count() > 1 {
            let lower = rest.to_ascii_lowercase();
            if let Some(r) = lower.strip_prefix("ctrl-") {
                modifiers |= KeyModifiers::CONTROL;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower.strip_prefix("alt-") {
                modifiers |= KeyModifiers::ALT;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower.strip_prefix("shift-") {
                modifiers |= KeyModifiers::SHIFT;
                rest = &rest[rest.len() - r.len()..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => {
                if modifiers.contains(KeyModifiers::SHIFT) {
                    KeyCode::Char(c.to_ascii_uppercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            _ => named_key(&rest.to_ascii_lowercase())
                .ok_or_else(|| format!("unknown key {text:?}"))?,
        };
        let code = if code == KeyCode::Tab && modifiers.contains(KeyModifiers::SHIFT) {
            KeyCode::BackTab
        } else {
            code
        };
        Ok(Key::new(code, modifiers))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            f.write_str("ctrl-")?;
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            f.write_str("alt-")?;
        }
        if self.modifiers.contains(KeyModifiers::SHIFT) {
            f.write_str("shift-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::F(n) => write!(f, "f{n}"),
            KeyCode::BackTab => f.write_str("shift-tab"),
            code => f.write_str(
                NAMED_KEYS
                    .iter()
                    .find(|(_, c)| *c == code)
                    .map_or("?", |(name, _)| name),
            ),
        }
    }
}

/// Named keys, first spelling is the one shown.
const NAMED_KEYS: [(&str, KeyCode); 18] = [
    ("enter", KeyCode::Enter),
    ("return", KeyCode::Enter),
    ("esc", KeyCode::Esc),
    ("escape", KeyCode::Esc),
    ("tab", KeyCode::Tab),
    ("backtab", KeyCode::BackTab),
    ("backspace", KeyCode::Backspace),
    ("delete", KeyCode::Delete),
    ("del", KeyCode::Delete),
    ("insert", KeyCode::Insert),
    ("up", KeyCode::Up),
    ("down", KeyCode::Down),
    ("left", KeyCode::Left),
    ("right", KeyCode::Right),
    ("home", KeyCode::Home),
    ("end", KeyCode::End),
    ("pageup", KeyCode::PageUp),
    ("pagedown", KeyCode::PageDown),
];

fn named_key(name: &str) -> Option<KeyCode> {
    if name == "space" {
        return Some(KeyCode::Char(' '));
    }
    if let Some(n) = name.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
        return (1..=24).contains(&n).then_some(KeyCode::F(n));
    }
    NAMED_KEYS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
}

/// The bindings in force.
#[derive(Clone, Debug)]
pub struct Keymap {
    by_action: BTreeMap<Action, Vec<Key>>,
    by_key: HashMap<Key, Action>,
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap::defaults()
    }
}

impl Keymap {
    /// The documented defaults (also in `assets/keymap.toml`).
    pub fn defaults() -> Self {
        let by_action = Action::ALL
            .into_iter()
            .map(|action| {
                let keys = action
                    .default_keys()
                    .iter()
                    .map(|k| Key::parse(k).expect("default key spellings are valid"))
                    .collect();
                (action, keys)
            })
            .collect();
        let (keymap, conflicts) = Keymap::index(by_action, &[]);
        debug_assert!(conflicts.is_empty(), "default keys conflict: {conflicts:?}");
        keymap
    }

    /// The defaults overridden by a `keymap.toml` text. Returns the keymap
    /// and warnings about what was ignored (unknown actions or keys, keys
    /// bound twice); only a file that is not TOML at all is an error.
    pub fn from_toml(text: &str) -> Result<(Keymap, Vec<String>), String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut warnings = Vec::new();
        let mut by_action = Keymap::defaults().by_action;
        let mut overridden = Vec::new();
        for (name, value) in &table {
            let Some(action) = Action::from_name(name) else {
                warnings.push(format!("unknown action {name:?} ignored"));
                continue;
            };
            let spellings: Vec<&str> = match value {
                toml::Value::String(s) => vec![s.as_str()],
                toml::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
                _ => {
                    warnings.push(format!("{name}: expected a key or a list of keys"));
                    continue;
                }
            };
            let mut keys = Vec::new();
            for spelling in spellings {
                match Key::parse(spelling) {
                    Ok(key) if !keys.contains(&key) => keys.push(key),
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("{name}: {e}")),
                }
            }
            by_action.insert(action, keys);
            overridden.push(action);
        }
        let (keymap, conflicts) = Keymap::index(by_action, &overridden);
        warnings.extend(conflicts);
        Ok((keymap, warnings))
    }

    /// The action bound to a key press, if any.
    pub fn action(&self, event: &KeyEvent) -> Option<Action> {
        self.by_key.get(&Key::from_event(event)).copied()
    }

    pub fn keys(&self, action: Action) -> &[Key] {
        self.by_action.get(&action).map_or(&[], Vec::as_slice)
    }

    /// The keys of an action as the help shows them: `q, ctrl-c`.
    pub fn describe(&self, action: Action) -> String {
        let keys = self.keys(action);
        if keys.is_empty() {
            return "(unbound)".to_owned();
        }
        keys.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first key of an action, for hints like "press ? for help".
    pub fn first_key(&self, action: Action) -> Option<String> {
        self.keys(action).first().map(ToString::to_string)
    }

    /// Build the reverse index. A key bound by the file takes the key away
    /// from a default binding silently (that is what overriding means); a
    /// key the file binds twice keeps its first action, with a warning.
    fn index(
        mut by_action: BTreeMap<Action, Vec<Key>>,
        overridden: &[Action],
    ) -> (Keymap, Vec<String>) {
        let mut warnings = Vec::new();
        let mut by_key: HashMap<Key, Action> = HashMap::new();
        // Overridden actions claim their keys first.
        let order = overridden
            .iter()
            .copied()
            .chain(Action::ALL.into_iter().filter(|a| !overridden.contains(a)));
        for action in order {
            let keys = by_action
                .get_mut(&action)
                .expect("every action has an entry");
            keys.retain(|key| match by_key.get(key) {
                None => {
                    by_key.insert(*key, action);
                    true
                }
                Some(owner) => {
                    if overridden.contains(&action) {
                        warnings.push(format!(
                            "key {key} is bound to both {} and {}; {} keeps it",
                            owner.name(),
                            action.name(),
                            owner.name()
                        ));
                    }
                    false
                }
            });
        }
        (Keymap { by_action, by_key }, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn defaults_bind_the_documented_keys() {
        let keymap = Keymap::defaults();
        let cases = [
            (press(KeyCode::Char('q'), KeyModifiers::NONE), Action::Quit),
            (
                press(KeyCode::Char('c'), KeyModifiers::CONTROL),
                Action::Quit,
            ),
            (press(KeyCode::Char('?'), KeyModifiers::SHIFT), Action::Help),
            (press(KeyCode::Tab, KeyModifiers::NONE), Action::NextPane),
            (
                press(KeyCode::BackTab, KeyModifiers::SHIFT),
                Action::PrevPane,
            ),
            (press(KeyCode::Char('j'), KeyModifiers::NONE), Action::Down),
            (press(KeyCode::Up, KeyModifiers::NONE), Action::Up),
            (
                press(KeyCode::Char('K'), KeyModifiers::SHIFT),
                Action::PriorityUp,
            ),
            (
                press(KeyCode::Char('J'), KeyModifiers::SHIFT),
                Action::PriorityDown,
            ),
            (
                press(KeyCode::Char(' '), KeyModifiers::NONE),
                Action::Select,
            ),
            (
                press(KeyCode::Backspace, KeyModifiers::NONE),
                Action::Parent,
            ),
            (press(KeyCode::Enter, KeyModifiers::NONE), Action::Open),
            (
                press(KeyCode::Char('/'), KeyModifiers::NONE),
                Action::Filter,
            ),
            (
                press(KeyCode::Char('.'), KeyModifiers::NONE),
                Action::ToggleHidden,
            ),
            (
                press(KeyCode::Char('R'), KeyModifiers::SHIFT),
                Action::RefreshRemote,
            ),
            (
                press(KeyCode::Char('3'), KeyModifiers::NONE),
                Action::ViewCompleted,
            ),
        ];
        for (event, action) in cases {
            assert_eq!(keymap.action(&event), Some(action), "{event:?}");
        }
        assert_eq!(
            keymap.action(&press(KeyCode::Char('z'), KeyModifiers::NONE)),
            None
        );
    }

    #[test]
    fn key_spellings_round_trip_through_display() {
        for spelling in [
            "q",
            "K",
            "?",
            "ctrl-c",
            "alt-x",
            "shift-tab",
            "enter",
            "space",
            "f5",
            "pagedown",
            "-",
        ] {
            let key = Key::parse(spelling).expect("valid spelling");
            assert_eq!(key.to_string(), spelling);
        }
        assert_eq!(
            Key::parse("shift-k").map(|k| k.to_string()),
            Ok("K".to_owned())
        );
        assert_eq!(
            Key::parse("backtab").map(|k| k.to_string()),
            Ok("shift-tab".to_owned())
        );
        assert!(Key::parse("hyper-q").is_err());
        assert!(Key::parse("f99").is_err());
    }

    #[test]
    fn file_overrides_replace_an_actions_keys_and_free_the_old_ones() {
        let (keymap, warnings) =
            Keymap::from_toml("upload = [\"ctrl-u\", \"U\"]\nquit = \"Q\"\n").expect("valid toml");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(keymap.describe(Action::Upload), "ctrl-u, U");
        assert_eq!(
            keymap.action(&press(KeyCode::Char('u'), KeyModifiers::NONE)),
            None
        );
        assert_eq!(
            keymap.action(&press(KeyCode::Char('Q'), KeyModifiers::SHIFT)),
            Some(Action::Quit)
        );
        // Other defaults stay.
        assert_eq!(keymap.describe(Action::Help), "?");
    }

    #[test]
    fn a_file_binding_takes_a_key_from_a_default() {
        let (keymap, warnings) = Keymap::from_toml("upload = \"q\"").expect("valid toml");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            keymap.action(&press(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Action::Upload)
        );
        assert_eq!(keymap.describe(Action::Quit), "ctrl-c");
    }

    #[test]
    fn mistakes_in_the_file_are_warnings_not_failures() {
        let (keymap, warnings) = Keymap::from_toml(
            "fly = \"f\"\nhelp = [\"nope-key\", \"h\"]\nretry = \"h\"\ncancel = 3\n",
        )
        .expect("valid toml");
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert_eq!(keymap.describe(Action::Help), "h");
        assert_eq!(keymap.describe(Action::Cancel), "x");
        assert!(Keymap::from_toml("this is not = = toml").is_err());
    }

    #[test]
    fn unbinding_an_action_shows_in_the_help() {
        let (keymap, _) = Keymap::from_toml("show_log = []").expect("valid toml");
        assert_eq!(keymap.describe(Action::ShowLog), "(unbound)");
    }

    #[test]
    fn shipped_keymap_file_documents_exactly_the_defaults() {
        let text = include_str!("../../assets/keymap.toml");
        let table: toml::Table = text.parse().expect("assets/keymap.toml is TOML");
        for action in Action::ALL {
            let value = table
                .get(action.name())
                .unwrap_or_else(|| panic!("assets/keymap.toml misses {}", action.name()));
            let keys: Vec<&str> = value
                .as_array()
                .expect("each action is a list")
                .iter()
                .map(|v| v.as_str().expect("keys are strings"))
                .collect();
            assert_eq!(keys, action.default_keys(), "{}", action.name());
        }
        assert_eq!(table.len(), Action::ALL.len());
        let (_, warnings) = Keymap::from_toml(text).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn every_action_has_a_unique_name() {
        let mut names: Vec<_> = Action::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }
}
