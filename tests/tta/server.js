#!/usr/bin/env node
// telegram-test-api (4.2.1, an emulator nobody on the pigeon team wrote) for
// tests/smoke_telegram_test_api.rs: starts its TelegramServer on 127.0.0.1
// and plays one simulated user with the package's own TelegramClient, so the
// updates pigeon's bot reads have the package's shapes, not ours.
//
//   PIGEON_TTA_TOKEN=<bot token> node server.js [--port N] [--user-id N]
//
// --port 0 (the default) takes a free port. The user's private chat has the
// user's id, as on Telegram. Its username is "pigeon_peer".
//
// stdout, one JSON object a line: first {"port":N} once listening, then one
// answer per command, in order: {"ok":true,"result":...} or
// {"ok":false,"error":"..."}. stdin, one JSON command a line:
//   {"op":"send","text":"..."}  the user writes to the bot
//   {"op":"receive"}            the bot's unread messages to the user, raw as
//                               the package keeps them (waits up to 15 s)
// The process exits when stdin closes, so a killed test leaves no server.
//
// One workaround, for a deviation from the Bot API: the package's getUpdates
// answers at once and ignores `timeout` (no long polling), which turns any
// long-polling bot into a busy loop. A getUpdates with nothing unread for
// its token is held here until the user writes or HOLD_MS passes, then
// handed to the package's own handler, which writes the answer. Nothing
// else is changed.

'use strict';

const net = require('net');
const readline = require('readline');
const TelegramServer = require('telegram-test-api');

// How long an empty getUpdates is held (less than any client's timeout).
const HOLD_MS = 2000;
// How long `receive` waits for the bot's messages.
const RECEIVE_TIMEOUT_MS = 15000;

function parseArgs(argv) {
  const args = { port: 0, userId: 1 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new Error(`${flag} needs a whole number, got ${JSON.stringify(value)}`);
    }
    if (flag === '--port') args.port = n;
    else if (flag === '--user-id') args.userId = n;
    else throw new Error(`unknown flag ${flag}; known: --port, --user-id`);
  }
  return args;
}

// A port nobody listens on now. The package treats port 0 as "use 9000"
// (`config.port || 9000`), so the OS is asked here instead.
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// Hold a getUpdates that would come back empty (see the header). The
// package's express app stays the request handler; it is called later.
function holdEmptyPolls(server) {
  const http = server.server;
  const app = server.webServer;
  const poll = /^\/bot([^/]+)\/getupdates(\?|$)/i;
  const unread = (token) => server.storage.userMessages
    .some((u) => u.botToken === token && !u.isRead);
  if (!http.listeners('request').includes(app)) {
    throw new Error('telegram-test-api no longer serves through its express app; revisit holdEmptyPolls');
  }
  http.off('request', app);
  http.on('request', (req, res) => {
    const match = poll.exec(req.url);
    if (!match || unread(decodeURIComponent(match[1]))) {
      app(req, res);
      return;
    }
    const release = () => {
      clearTimeout(timer);
      server.off('AddedUserMessage', release);
      app(req, res);
    };
    const timer = setTimeout(release, HOLD_MS);
    server.on('AddedUserMessage', release);
  });
}

async function start(port, attempts = 5) {
  const chosen = port || await freePort();
  const server = new TelegramServer({ host: '127.0.0.1', port: chosen, storeTimeout: 600 });
  try {
    await server.start();
    holdEmptyPolls(server);
    return { server, port: chosen };
  } catch (e) {
    // Another process took the free port between the probe and the start.
    if (e.code === 'EADDRINUSE' && port === 0 && attempts > 1) return start(0, attempts - 1);
    throw e;
  }
}

function say(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main() {
  const token = process.env.PIGEON_TTA_TOKEN;
  if (!token) throw new Error('PIGEON_TTA_TOKEN must hold the bot token');
  const args = parseArgs(process.argv.slice(2));
  const { server, port } = await start(args.port);
  const user = server.getClient(token, {
    userId: args.userId,
    chatId: args.userId,
    userName: 'pigeon_peer',
    firstName: 'Pigeon Peer',
    timeout: RECEIVE_TIMEOUT_MS,
  });
  say({ port });

  const commands = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of commands) {
    if (!line.trim()) continue;
    try {
      const command = JSON.parse(line);
      if (command.op === 'send') {
        await user.sendMessage(user.makeMessage(command.text));
        say({ ok: true, result: null });
      } else if (command.op === 'receive') {
        const updates = await user.getUpdates();
        say({ ok: true, result: updates.result });
      } else {
        say({ ok: false, error: `unknown op ${JSON.stringify(command.op)}; known: send, receive` });
      }
    } catch (e) {
      say({ ok: false, error: String(e && e.message ? e.message : e) });
    }
  }
  // stdin closed: the test is over (or was killed).
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`tta server: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
