// Atalaia console: what the board and the incident page share — language and formatting
// (Europe/Lisbon, relative ages, units), the session's sign-in, API calls, the live stream.
'use strict';
const TZ = 'Europe/Lisbon';
const LANGS = ['pt-PT', 'en-GB'];
const C = { lang: 'en-GB', cat: {}, who: null };

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
}
function pickLang() {
  const q = new URLSearchParams(location.search).get('lang');
  if (LANGS.includes(q)) { localStorage.setItem('atalaia.lang', q); return q; }
  const saved = localStorage.getItem('atalaia.lang');
  if (LANGS.includes(saved)) return saved;
  for (const l of navigator.languages || [navigator.language]) {
    if (/^pt/i.test(l)) return 'pt-PT';
    if (/^en/i.test(l)) return 'en-GB';
  }
  return 'en-GB';
}
async function loadLang() {
  C.lang = pickLang();
  document.documentElement.lang = C.lang;
  const all = await (await fetch('/console/i18n.json')).json();
  C.cat = all[C.lang];
  document.querySelectorAll('[data-t]').forEach(el => { el.textContent = t(el.dataset.t); });
  document.querySelectorAll('[data-t-placeholder]').forEach(el => { el.placeholder = t(el.dataset.tPlaceholder); });
  const sel = document.getElementById('lang');
  if (sel) {
    sel.value = C.lang;
    sel.addEventListener('change', () => { localStorage.setItem('atalaia.lang', sel.value); location.search = ''; location.reload(); });
  }
}
function t(key, vars) {
  let s = C.cat[key] ?? key;
  // (a function: a value's $' $& $` are its own characters, not replacement patterns)
  for (const [k, v] of Object.entries(vars || {})) s = s.replaceAll(`{${k}}`, () => String(v));
  return s;
}
const sevText = s => t('sev.' + s) === 'sev.' + s ? s : t('sev.' + s);
const stateText = s => t('st.' + s) === 'st.' + s ? s : t('st.' + s);
const changeText = s => t('ch.' + s) === 'ch.' + s ? s : t('ch.' + s);
const alarmStateText = s => t('as.' + s) === 'as.' + s ? s : t('as.' + s);

// --- times: Europe/Lisbon with the zone, and relative ages
// One Intl formatter per (kind, language, options), made once: making one costs about as much as
// formatting hundreds of values, and a board in a storm formats every row's age many times a second
// (a new RelativeTimeFormat per call held the page's main thread for minutes).
const FORMATTERS = new Map();
function formatter(Kind, opts) {
  const key = `${Kind.name}|${C.lang}|${JSON.stringify(opts)}`;
  let f = FORMATTERS.get(key);
  if (!f) { f = new Kind(C.lang, opts); FORMATTERS.set(key, f); }
  return f;
}
function when(ts, withDate = true) {
  if (!ts) return t('none');
  const d = new Date(ts);
  if (isNaN(d)) return String(ts);
  const opts = {timeZone: TZ, hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short', hourCycle: 'h23'};
  if (withDate) Object.assign(opts, {day: '2-digit', month: '2-digit', year: 'numeric'});
  return formatter(Intl.DateTimeFormat, opts).format(d);
}
function ago(ts, now = Date.now()) {
  if (!ts) return t('none');
  const s = Math.round((new Date(ts).getTime() - now) / 1000);
  const rtf = formatter(Intl.RelativeTimeFormat, {numeric: 'auto'});
  const a = Math.abs(s);
  if (a < 60) return rtf.format(s, 'second');
  if (a < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (a < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}
function num(v, unit) {
  if (v === null || v === undefined || v === '') return t('none');
  const n = Number(v);
  const a = Math.abs(n);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  const text = formatter(Intl.NumberFormat, {maximumFractionDigits: digits}).format(n);
  return unit ? `${text} ${unit}` : text;
}

// --- a small chart of recent observations: inline SVG, no library
function sparkline(series, width = 320, height = 84) {
  const pts = (series.points || []).map(p => [new Date(p.at).getTime(), Number(p.value)]).filter(p => !isNaN(p[0]) && isFinite(p[1]));
  const name = `${String(series.entity || '').split(':').pop()} · ${series.attribute}`;
  if (!pts.length) return `<figure class="chart"><figcaption>${esc(name)}</figcaption><p class="muted">${esc(t('series.none'))}</p></figure>`;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), lo = Math.min(...ys), hi = Math.max(...ys);
  const pad = 4, w = width - 2 * pad, h = height - 2 * pad;
  const X = x => pad + (x1 > x0 ? (x - x0) / (x1 - x0) * w : w);
  const Y = y => pad + (hi > lo ? (hi - y) / (hi - lo) * h : h / 2);
  const line = pts.map(p => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
  const last = pts[pts.length - 1];
  const label = t('series.label', {what: name, n: pts.length, min: num(lo, series.unit), max: num(hi, series.unit),
    last: num(last[1], series.unit), from: when(x0), to: when(x1)});
  return `<figure class="chart"><figcaption>${esc(name)}: <b>${esc(num(last[1], series.unit))}</b>
    <span class="muted">(${esc(t('series.range', {min: num(lo, series.unit), max: num(hi, series.unit)}))})</span></figcaption>
    <svg role="img" aria-label="${esc(label)}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" preserveAspectRatio="none">
      <title>${esc(label)}</title>
      <polyline fill="none" stroke="currentColor" stroke-width="1.5" points="${line}"/>
      <circle cx="${X(last[0]).toFixed(1)}" cy="${Y(last[1]).toFixed(1)}" r="2.5" fill="currentColor"/>
    </svg>
    <span class="muted">${esc(when(x0, false))} – ${esc(when(x1, false))}</span></figure>`;
}

// --- sign-in: a token (an API token, or a session token from a password) kept for the browser session
const token = () => sessionStorage.getItem('atalaia.token') || '';
function authHeaders() { const tk = token(); return tk ? {Authorization: `Bearer ${tk}`} : {}; }
async function api(path, opts = {}) {
  const r = await fetch(path, Object.assign({}, opts, {headers: Object.assign({}, opts.headers || {}, authHeaders())}));
  if (r.status === 401) { needLogin(); throw Object.assign(new Error('401'), {status: 401}); }
  return r;
}
async function whoami() {
  const r = await fetch('/api/whoami', {headers: authHeaders()});
  if (r.status === 401) { C.who = null; return null; }
  C.who = await r.json();
  return C.who;
}
// the sign-in form, saying why: the token was refused, or there is none yet
function needLogin() { showLogin(token() ? t('login.bad') : t('login.needed')); }
// who is signed in, shown in the header; null (and the sign-in form) when nobody is
async function signedIn() {
  const who = await whoami();
  if (!who) { needLogin(); return null; }
  showUser();
  return who;
}
function showLogin(message) {
  const box = document.getElementById('login');
  if (!box) return;
  box.hidden = false;
  document.getElementById('login-msg').textContent = message;
  document.getElementById('userline').textContent = '';
  document.dispatchEvent(new CustomEvent('atalaia:login-needed'));
}
// the sign-in form of every page: a username and password (a session token from /api/login), or an
// API token; either is kept in sessionStorage (this tab, until it closes or signs out)
function buildLogin(form) {
  form.innerHTML = `<h2>${esc(t('login.title'))}</h2>
    <p id="login-msg" role="alert"></p>
    <label><span>${esc(t('login.user'))}</span> <input id="username" name="username" autocomplete="username" size="16"></label>
    <label><span>${esc(t('login.password'))}</span> <input id="password" name="password" type="password" autocomplete="current-password" size="16"></label>
    <p class="muted">${esc(t('login.or'))}</p>
    <label><span>${esc(t('login.token'))}</span> <input id="token" type="password" autocomplete="off" size="24"></label>
    <button class="primary" type="submit">${esc(t('login.submit'))}</button>`;
}
async function signIn(username, password) {
  const r = await fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                       body: JSON.stringify({username, password})});
  const j = await r.json().catch(() => ({}));
  if (r.ok && j.token) { sessionStorage.setItem('atalaia.token', j.token); return null; }
  if (r.status === 429) return t('login.limited', {s: j.retry_after || r.headers.get('Retry-After') || 60});
  if (r.status === 401) return t('login.wrong');
  return t('login.failed', {reason: j.detail || r.status});
}
function setupLogin(onSignedIn) {
  const form = document.getElementById('login');
  buildLogin(form);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const user = document.getElementById('username').value.trim();
    const pass = document.getElementById('password').value;
    const tk = document.getElementById('token').value.trim();
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      if (user || pass) {
        if (!user || !pass) { showLogin(t('login.both')); return; }
        const problem = await signIn(user, pass);
        document.getElementById('password').value = '';
        if (problem) { showLogin(problem); return; }
      } else if (tk) {
        sessionStorage.setItem('atalaia.token', tk);
      } else { showLogin(t('login.needed')); return; }
      const who = await whoami();
      if (!who) { showLogin(t('login.bad')); return; }
      form.hidden = true;
      showUser();
      onSignedIn();
    } finally { button.disabled = false; }
  });
  document.getElementById('logout').addEventListener('click', async () => {
    // end the session on the server (a session token stops working at once), then forget it here
    try { await fetch('/api/logout', {method: 'POST', headers: authHeaders()}); } catch (e) { /* offline */ }
    sessionStorage.removeItem('atalaia.token'); location.reload();
  });
}
function showUser() {
  const line = document.getElementById('userline');
  const out = document.getElementById('logout');
  const actorBox = document.getElementById('actorbox');
  if (!C.who) return;
  if (C.who.authentication === 'off') {
    line.textContent = t('login.demo');
    if (actorBox) actorBox.hidden = false;
    out.hidden = true;
  } else {
    line.textContent = t('login.as', {actor: C.who.actor, role: C.who.role});
    if (actorBox) actorBox.hidden = true;
    out.hidden = false;
  }
}
// who acts (the demo trusts the body; with tokens the server takes both from the token)
function actor() {
  const box = document.getElementById('actor');
  const name = box && box.value.trim() ? box.value.trim() : 'operator-1';
  localStorage.setItem('atalaia.actor', name);
  return name;
}

// --- refusals: the console API names each refusal it can explain in a problem+json `type`
// (urn:atalaia:console:<code>) with the values it names in `params`; the page says it with its
// words for that code (pb.<code>), and the API's English `detail` only for a code it does not know
const PROBLEM_TYPE = 'urn:atalaia:console:';
function paramText(name, v) {
  const s = String(v ?? '');
  if (['state', 'needed'].includes(name)) return stateText(s);
  if (name === 'action') return t('act.' + s) === 'act.' + s ? s : t('act.' + s);
  if (name === 'role') return t('role.' + s) === 'role.' + s ? s : t('role.' + s);
  if (name === 'change') return changeText(s);
  return s;
}
function refusal(j, status) {
  const type = j && typeof j.type === 'string' ? j.type : '';
  if (type.startsWith(PROBLEM_TYPE)) {
    const key = 'pb.' + type.slice(PROBLEM_TYPE.length);
    if (Object.hasOwn(C.cat, key)) {
      const vars = {};
      for (const [k, v] of Object.entries((j.params && typeof j.params === 'object') ? j.params : {})) vars[k] = paramText(k, v);
      return t(key, vars);
    }
  }
  return (j && j.detail) || String(status ?? '');
}
// one problem of a list (`errors`: a draft's fields): its code's words, else its own message
function problemText(e) {
  const key = 'pb.draft.' + (e && e.code);
  return e && e.code && Object.hasOwn(C.cat, key) ? t(key) : String((e && e.message) ?? '');
}

// --- commands
async function command(id, action, extra) {
  const body = Object.assign({action, actor: actor(), role: (C.who && C.who.role) || 'operator'}, extra || {});
  const r = await api(`/api/incidents/${encodeURIComponent(id)}/commands`, {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({}));
  const name = t('act.' + action);
  if (r.status === 200) return {ok: true, text: t('act.done', {action: name})};
  if (r.status === 202) return {ok: true, text: t('act.queued', {action: name})};
  return {ok: false, text: t('act.refused', {action: name, reason: refusal(j, r.status)})};
}

// --- live stream: server-sent events read with fetch (so the token travels in a header)
function stream(onEvent, onState) {
  let stopped = false;
  // a stream that stays silent (a half-open connection: no ping for 15 s where one comes every
  // 5 s) is given up and opened again, and said lost meanwhile: it read "Live" for ever. (Counted
  // in ticks, not read off the clock: a page whose main thread was held for seconds has its
  // timers and its data waiting together, and one late tick is not a silence.)
  let aborter = null, quiet = 0;
  const watchdog = setInterval(() => { if (++quiet >= 15 && aborter) { aborter.abort(); aborter = null; } }, 1000);
  async function run() {
    while (!stopped) {
      try {
        onState('connecting');
        aborter = new AbortController(); quiet = 0;
        const r = await fetch('/api/stream', {headers: authHeaders(), signal: aborter.signal});
        if (r.status === 401) { onState('login'); needLogin(); return; }
        if (!r.ok || !r.body) throw new Error(String(r.status));
        onState('live');
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        quiet = 0;
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          quiet = 0;
          buf += value;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
            let type = 'message', data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data) onEvent(type, JSON.parse(data));
          }
        }
      } catch (e) { /* fall through to retry */ }
      if (stopped) return;
      onState('lost');
      await new Promise(res => setTimeout(res, 2000));
    }
  }
  run();
  return () => { stopped = true; clearInterval(watchdog); if (aborter) aborter.abort(); };
}
