// Atalaia console: what the warnings list and the warning editor share (on top of console.js).
'use strict';
const LEVEL_CLASS = {green: 'informational', azul: 'low', yellow: 'medium', orange: 'high', red: 'critical'};

const wStateText = s => (t('ws.' + s) === 'ws.' + s ? s : t('ws.' + s));
const statusText = s => (t('wstatus.' + s) === 'wstatus.' + s ? s : t('wstatus.' + s));
const msgTypeText = s => (t('wmsg.' + s) === 'wmsg.' + s ? s : t('wmsg.' + s));
function levelBadge(level) {
  if (!level) return '';
  const name = t('lvl.' + level) === 'lvl.' + level ? level : t('lvl.' + level);
  return `<span class="sev ${esc(LEVEL_CLASS[level] || 'informational')}">${esc(name)}</span>`;
}
function langText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  return v[C.lang] || v['pt-PT'] || Object.values(v)[0] || '';
}
function areaText(d) {
  const areas = Array.isArray(d.area) ? d.area : d.area ? [d.area] : [];
  const out = [];
  for (const a of areas) {
    if (a.desc) { out.push(langText(a.desc)); continue; }
    for (const [kind, codes] of Object.entries(a.geocodes || {})) out.push(`${kind} ${codes.join(', ')}`);
  }
  return out.join('; ');
}

// --- who acts: the token (server side), or in the demo the name and role chosen here
function demo() { return C.who && C.who.authentication === 'off'; }
function role() {
  if (!demo()) return (C.who && C.who.role) || 'viewer';
  const box = document.getElementById('role');
  return (box && box.value) || 'operator';
}
function whoQuery() {
  return demo() ? `?actor=${encodeURIComponent(actor())}&role=${encodeURIComponent(role())}` : '';
}
// the page's start: the demo's name and role boxes, the sign-in form, then onReady once someone is
// signed in (not named signIn: that is console.js's password sign-in, which the form calls)
async function startSignedIn(onReady) {
  const rb = document.getElementById('role');
  if (rb) {
    rb.value = localStorage.getItem('atalaia.role') || 'operator';
    rb.addEventListener('change', () => { localStorage.setItem('atalaia.role', rb.value); onReady(); });
  }
  const ab = document.getElementById('actor');
  if (ab) { ab.value = localStorage.getItem('atalaia.actor') || 'operator-1'; ab.addEventListener('change', () => onReady()); }
  setupLogin(onReady);
  if (!(await signedIn())) return;
  if (rb) document.getElementById('rolebox').hidden = !demo();
  await onReady();
}

// --- commands: the answer of the warnings stage, in words
async function warningCall(path, action, body) {
  const payload = Object.assign({}, body || {});
  if (demo()) Object.assign(payload, {actor: actor(), role: role()});
  const r = await api(path, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(payload)});
  const j = await r.json().catch(() => ({}));
  const name = t('wact.' + action);
  if (r.status === 200 || r.status === 201) return {ok: true, warning: j.warning, text: t('act.done', {action: name})};
  if (r.status === 202) return {ok: true, text: t('w.queued', {action: name})};
  return {ok: false, status: r.status, errors: j.errors || [], text: t('act.refused', {action: name, reason: refusal(j, r.status)})};
}

// --- Europe/Lisbon wall time <-> RFC 3339 (the form shows Lisbon time, the draft carries an offset)
function lisbonParts(ms) {
  const f = new Intl.DateTimeFormat('en-GB', {timeZone: TZ, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23'});
  const p = Object.fromEntries(f.formatToParts(new Date(ms)).map(x => [x.type, x.value]));
  return p;
}
function toLisbonInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const p = lisbonParts(d.getTime());
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}
function fromLisbonInput(value) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(value || '');
  if (!m) return null;
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
  let guess = wall;
  for (let i = 0; i < 2; i++) {
    const p = lisbonParts(guess);
    const shown = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    guess = wall - (shown - guess);
  }
  return new Date(guess).toISOString().replace(/\.\d{3}Z$/, '+00:00');
}
