// Drives the openai npm package's own WebSocket clients through tiergate's
// bridge (wsbridge's TestNodeClients starts the bridge, over TLS, in front of
// its fake upstream). Each line printed is one JSON object:
//   {"client": "...", "event": <server event as the client parsed it>}
//   {"client": "...", "error": {"message": ..., "error": <the error event>}}
//   {"client": "...", "close": {"code": ..., "reason": ...}}
// The Go test asserts on these lines and on what the upstream received.
//
// Env: TIERGATE_BASE_URL (https://127.0.0.1:PORT/v1), OPENAI_API_KEY, and
// NODE_EXTRA_CA_CERTS (the test's CA: the Realtime client speaks only wss).

import OpenAI from 'openai';
import { ResponsesWS } from 'openai/resources/responses/ws';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWS as BetaRealtimeWS } from 'openai/beta/realtime/ws';

const baseURL = process.env.TIERGATE_BASE_URL;
const apiKey = process.env.OPENAI_API_KEY;
if (!baseURL || !apiKey) {
  console.error('set TIERGATE_BASE_URL and OPENAI_API_KEY');
  process.exit(2);
}

const out = (client, kind, data) => process.stdout.write(JSON.stringify({ client, [kind]: data }) + '\n');

const guard = setTimeout(() => {
  console.error('timed out');
  process.exit(3);
}, 30000);

// Responses WebSocket mode: a filtered turn, a passing turn, then a blocked
// one, which ends the session.
function responses() {
  return new Promise((resolve) => {
    const client = new OpenAI({ apiKey, baseURL });
    const ws = new ResponsesWS(client);
    let completed = 0;
    ws.on('event', (ev) => {
      out('responses', 'event', ev);
      if (ev.type !== 'response.completed') return;
      completed++;
      if (completed === 1) {
        ws.send({ type: 'response.create', model: 'gpt-5.4', service_tier: 'flex', input: 'And again.' });
      } else if (completed === 2) {
        ws.send({ type: 'response.create', model: 'gpt-5.5', service_tier: 'priority', input: 'Fast, please.' });
      }
    });
    ws.on('error', (err) => out('responses', 'error', { message: err.message, error: err.error ?? null }));
    ws.on('close', (code, reason) => {
      out('responses', 'close', { code, reason: String(reason) });
      resolve();
    });
    // Sent before the socket is open: the client queues it.
    ws.send({ type: 'response.create', model: 'gpt-5.4', service_tier: 'fast', input: 'Say hello.' });
  });
}

// Realtime, GA: wait for session.created, update the session, ask for a
// response, close once it is done.
function realtime() {
  return new Promise((resolve) => {
    const client = new OpenAI({ apiKey, baseURL });
    const rt = new OpenAIRealtimeWS({ model: 'gpt-realtime' }, client);
    rt.on('event', (ev) => {
      out('realtime', 'event', ev);
      switch (ev.type) {
        case 'session.created':
          rt.send({ type: 'session.update', session: { type: 'realtime', output_modalities: ['text'] } });
          break;
        case 'session.updated':
          rt.send({ type: 'response.create', response: { output_modalities: ['text'], instructions: 'Say hi.' } });
          break;
        case 'response.done':
          rt.close({ code: 1000, reason: 'done' });
          break;
      }
    });
    rt.on('error', (err) => out('realtime', 'error', { message: err.message, error: err.error ?? null }));
    rt.socket.on('close', (code, reason) => {
      out('realtime', 'close', { code, reason: String(reason) });
      resolve();
    });
  });
}

// Realtime, beta: a session on a model the policy reserves; a response.create
// asking for priority is blocked.
function realtimeBeta() {
  return new Promise((resolve) => {
    const client = new OpenAI({ apiKey, baseURL });
    const rt = new BetaRealtimeWS({ model: 'gpt-realtime-max' }, client);
    rt.on('event', (ev) => {
      out('realtime_beta', 'event', ev);
      if (ev.type === 'session.created') {
        rt.send({ type: 'response.create', response: { modalities: ['text'], service_tier: 'priority' } });
      }
    });
    rt.on('error', (err) => out('realtime_beta', 'error', { message: err.message, error: err.error ?? null }));
    rt.socket.on('close', (code, reason) => {
      out('realtime_beta', 'close', { code, reason: String(reason) });
      resolve();
    });
  });
}

await responses();
await realtime();
await realtimeBeta();
clearTimeout(guard);
