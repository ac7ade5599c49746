//! The platform emulators as the end-to-end tests set them up.

use pigeon_emulator::telegram::{BotSpec, Emulator};

/// The client's and the agent's bots, as the Telegram emulator knows them.
pub const TG_CLIENT_TOKEN: &str = "1001:client-secret-token";
pub const TG_AGENT_TOKEN: &str = "1002:agent-secret-token";

/// A Telegram emulator on 127.0.0.1 that knows the two bots (`client_bot`,
/// `agent_bot`), at `rate` messages a second per chat; its `api=` address.
pub fn telegram_emulator(rate: f64) -> (Emulator, String) {
    let emu = Emulator::new(&[
        BotSpec {
            token: TG_CLIENT_TOKEN.into(),
            username: "client_bot".into(),
        },
        BotSpec {
            token: TG_AGENT_TOKEN.into(),
            username: "agent_bot".into(),
        },
    ])
    .with_rate(rate);
    let api = pigeon_emulator::serve_in_background(emu.router())
        .expect("the emulator listens on 127.0.0.1");
    (emu, api)
}

/// The client's (`dev-laptop`) and the agent's (`agent-phone`) Shipper
/// credentials, as the Shipper emulator knows them.
pub const SHIP_CLIENT_KEY: &str = "ck-dev-laptop";
pub const SHIP_CLIENT_SECRET: &str = "client-shipper-secret";
pub const SHIP_AGENT_KEY: &str = "ak-agent-phone";
pub const SHIP_AGENT_SECRET: &str = "agent-shipper-secret";

/// A Shipper emulator on 127.0.0.1 with the two accounts, announcing (and
/// holding posts to) these limits; its `base_url=`.
pub fn shipper_emulator(
    max_message: usize,
    rate_limit: u32,
) -> (pigeon_emulator::shipper::Emulator, String) {
    use pigeon_emulator::shipper::{AccountSpec, Emulator};
    let emu = Emulator::new(&[
        AccountSpec {
            name: "dev-laptop".into(),
            key: SHIP_CLIENT_KEY.into(),
            secret: SHIP_CLIENT_SECRET.into(),
        },
        AccountSpec {
            name: "agent-phone".into(),
            key: SHIP_AGENT_KEY.into(),
            secret: SHIP_AGENT_SECRET.into(),
        },
    ])
    .with_rate_limit(rate_limit)
    .with_max_message(max_message);
    let base = pigeon_emulator::serve_in_background(emu.router())
        .expect("the emulator listens on 127.0.0.1");
    (emu, base)
}
