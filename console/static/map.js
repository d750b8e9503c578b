// Atalaia console maps (on top of console.js and the vendored Leaflet): the configured CAOP parishes
// from /api/areas drawn on a plain background — no tile server, nothing leaves this console.
//   AMap.board(...)     the board's map: parishes coloured by their most severe open incident, a
//                       text legend, a keyboard list; picking a parish filters the board
//   AMap.pin(...)       the incident page: the incident's location as a pin over the parishes
//   AMap.areaTool(...)  the warning editor: pick parishes (DICOFRE), draw polygons, saved areas
'use strict';
const AMap = (() => {
  const SEVS = ['critical', 'high', 'medium', 'low', 'informational'];
  const FILL = {critical: '#b3261e', high: '#a63c06', medium: '#f59f00', low: '#2f6f9f', informational: '#6b7280'};
  const EMPTY = '#1f2a37', EDGE = '#8b98a7', PICKED = '#f0b429';
  const LABELS = ['dicofre', 'parish', 'freguesia', 'area'];
  let areasP = null;

  function areas() {
    if (!areasP) {
      areasP = fetch('/api/areas').then(r => {
        if (!r.ok) throw new Error(`/api/areas: ${r.status}`);
        return r.json();
      });
      areasP.catch(() => { areasP = null; });
    }
    return areasP;
  }
  const parishesOf = geo => geo.features.filter(f => f.properties.kind === 'DICOFRE');
  function fold(s) {
    return String(s ?? '').normalize('NFKD').replace(/[\u0300-\u036f]/g, '').toLowerCase().replace(/_/g, ' ')
      .split(/\s+/).filter(Boolean).join(' ');
  }
  const UNION = /^(?:uniao|u\.?f\.?) (?:(?:das|de|dos) freguesias )?(?:de |do |da |dos |das )?/;
  // ray casting over [lon, lat] rings
  function inRing(x, y, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }
  const contains = (f, lon, lat) => f.geometry.coordinates.some(poly => inRing(lon, lat, poly[0]));

  // The parish (DICOFRE code) of an incident: a DICOFRE label, else a parish name the CAOP knows
  // (a union's former parishes too), else the parish its location lies in; '' when none.
  function codeOf(i, feats) {
    const sets = [i.correlation || {}, i.labels || {}];
    for (const labels of sets) {
      for (const key of LABELS) {
        const v = String(labels[key] ?? '').trim();
        if (!v) continue;
        if (/^\d+$/.test(v)) {
          const code = v.padStart(6, '0');
          if (feats.some(f => f.properties.code === code)) return code;
          continue;
        }
        // a union however its prefix is written ("União de Freguesias do ...": the server's
        // names are without it, see warnings/catalogue.py parish_names)
        const name = fold(v), bare = name.replace(UNION, '');
        const hit = feats.find(f => f.properties.names.includes(name) || f.properties.names.includes(bare));
        if (hit) return hit.properties.code;
      }
    }
    const loc = Array.isArray(i.location) ? i.location : null;
    if (loc && loc.length >= 2) {
      const hit = feats.find(f => contains(f, Number(loc[0]), Number(loc[1])));
      if (hit) return hit.properties.code;
    }
    return '';
  }
  const sevName = s => (typeof sevText === 'function' ? sevText(s) : s);

  // a Leaflet map of the parishes; style(f) gives each parish's path options
  function baseMap(el, geo, style, label) {
    const map = L.map(el, {zoomSnap: 0.25, scrollWheelZoom: false, attributionControl: true, minZoom: 9, maxZoom: 17});
    map.attributionControl.setPrefix('Leaflet');
    map.attributionControl.addAttribution(esc(geo.attribution || 'CAOP, DGT'));
    const byCode = new Map();
    const layer = L.geoJSON({type: 'FeatureCollection', features: parishesOf(geo)}, {
      style: f => Object.assign({color: EDGE, weight: 1.5, opacity: 1, fillColor: EMPTY, fillOpacity: 0.9}, style(f)),
      onEachFeature: (f, l) => { byCode.set(f.properties.code, l); },
    }).addTo(map);
    const bounds = layer.getBounds();
    let fitted = el.clientWidth > 0 && el.clientHeight > 0;  // a closed <details> has no size yet
    if (fitted) map.fitBounds(bounds, {padding: [6, 6]}); else map.setView(bounds.getCenter(), 12);
    map.setMaxBounds(bounds.pad(0.6));
    // each parish is a keyboard stop too (Enter / Space act as a click)
    for (const [code, l] of byCode) {
      const path = l.getElement && l.getElement();
      if (!path) continue;
      path.setAttribute('tabindex', '0');
      path.setAttribute('role', 'button');
      path.setAttribute('data-code', code);
      path.setAttribute('aria-label', label ? label(l.feature) : l.feature.properties.name);
      path.addEventListener('keydown', ev => {
        if (ev.key !== 'Enter' && ev.key !== ' ') return;
        ev.preventDefault();
        l.fire('click', {latlng: l.getCenter(), originalEvent: ev});
      });
    }
    // a collapsed map (details) has no size: redraw when it opens or resizes
    if (window.ResizeObserver) {
      new ResizeObserver(() => {
        map.invalidateSize();
        if (!fitted && el.clientWidth > 0 && el.clientHeight > 0) { fitted = true; map.fitBounds(bounds, {padding: [6, 6]}); }
      }).observe(el);
    }
    return {map, layer, byCode, bounds};
  }

  // ---------------------------------------------------------------- the board
  function board({box, el, legend, list, onPick}) {
    let picked = '', state = {base: null, feats: null, worst: new Map(), counts: new Map()};
    const labels = new Map();
    const memo = new Map();
    // an incident's parish, remembered by what it is found from (its parish labels, its
    // location), not by incident and version: in a storm each render met 1 500 new versions of
    // incidents in the same few parishes and places, and looked each one up (names, polygons) again
    function code(i) {
      if (!state.feats) return '';
      const c = i.correlation || {}, l = i.labels || {};
      const k = LABELS.map(n => `${c[n] ?? ''}\u0000${l[n] ?? ''}`).join('\u0000') + '\u0000' + String(i.location);
      let v = memo.get(k);
      if (v === undefined) {
        if (memo.size >= 5000) memo.clear();
        looked++;
        v = codeOf(i, state.feats);
        memo.set(k, v);
      }
      return v;
    }
    function describe(f) {
      const c = f.properties.code, w = state.worst.get(c), n = state.counts.get(c) || 0;
      const what = w ? `${sevName(w)}, ${t('map.incidents', {n})}` : t('map.noincidents');
      return `${f.properties.name}: ${what}${picked === c ? ' · ' + t('map.filtering') : ''}`;
    }
    function pick(c) {
      picked = picked === c ? '' : c;
      paint();
      onPick(picked, picked ? state.base.byCode.get(picked).feature.properties.name : '');
    }
    let painted = null;  // what the last update painted (update)
    let looked = 0;  // parishes looked up (code): what the memo saves
    function paint() {
      if (!state.base) return;
      for (const [c, l] of state.base.byCode) {
        const w = state.worst.get(c);
        l.setStyle({fillColor: w ? FILL[w] : EMPTY, color: c === picked ? PICKED : EDGE, weight: c === picked ? 4 : 1.5});
        if (c === picked) l.bringToFront();
        const path = l.getElement();
        if (path) {
          path.setAttribute('aria-label', describe(l.feature));
          path.setAttribute('aria-pressed', String(c === picked));
          path.dataset.severity = w || '';
        }
        l.setTooltipContent(esc(describe(l.feature)));
        // the severity as shape and text too, not colour only
        const n = state.counts.get(c) || 0;
        const html = w ? `<span class="sev ${w}">${n}</span>` : '';
        const mk = labels.get(c);
        if (mk && mk.options.icon.options.html !== html) mk.setIcon(L.divIcon({className: 'map-count', html, iconSize: null}));
      }
      const totals = new Map();
      for (const w of state.worst.values()) totals.set(w, (totals.get(w) || 0) + 1);
      legend.innerHTML = `<span class="muted">${esc(t('map.legend'))}:</span> ` + SEVS.map(s =>
        `<span class="item"><span class="sev ${s}">${esc(sevName(s))}</span> <span class="muted">${esc(t('map.parishes', {n: totals.get(s) || 0}))}</span></span>`).join(' ') +
        ` <span class="item"><span class="swatch" aria-hidden="true"></span> <span class="muted">${esc(t('map.noincidents'))}</span></span>`;
      list.innerHTML = parishesOf({features: state.feats}).map(f => {
        const c = f.properties.code, w = state.worst.get(c), n = state.counts.get(c) || 0;
        return `<button type="button" data-code="${esc(c)}" aria-pressed="${c === picked}">${esc(f.properties.name)}` +
          (w ? ` <span class="sev ${w}">${esc(sevName(w))} · ${n}</span>` : '') + '</button>';
      }).join('');
    }
    list.addEventListener('click', ev => {
      const b = ev.target.closest('button[data-code]');
      if (b) pick(b.dataset.code);
    });
    const ready = areas().then(geo => {
      state.feats = parishesOf(geo);
      state.base = baseMap(el, geo, () => ({}), f => f.properties.name);
      for (const [c, l] of state.base.byCode) {
        l.bindTooltip(esc(l.feature.properties.name), {sticky: true});
        l.on('click', () => pick(c));
        labels.set(c, L.marker(l.getCenter(), {interactive: false, keyboard: false,
          icon: L.divIcon({className: 'map-count', html: '', iconSize: null})}).addTo(state.base.map));
      }
      box.dataset.ready = 'true';
      paint();
    }).catch(e => { legend.textContent = t('map.unavailable', {why: e.message}); });
    return {
      ready,
      codeOf: code,
      lookups: () => looked,
      picked: () => picked,
      clear() { if (picked) pick(picked); },
      update(open) {
        if (!state.feats) { ready.then(() => this.update(open)); return; }
        state.worst = new Map(); state.counts = new Map();
        for (const i of open) {
          const c = code(i);
          if (!c) continue;
          state.counts.set(c, (state.counts.get(c) || 0) + 1);
          const w = state.worst.get(c);
          if (!w || SEVS.indexOf(i.severity) < SEVS.indexOf(w)) state.worst.set(c, SEVS.includes(i.severity) ? i.severity : 'informational');
        }
        // painted again only when a parish's worst severity or count changed (each paint restyles
        // every parish and writes the legend and the parish list again)
        const sig = [...state.worst].map(([c, w]) => `${c}:${w}:${state.counts.get(c)}`).sort().join(',');
        if (sig === painted) return;
        painted = sig;
        paint();
      },
    };
  }

  // ---------------------------------------------------------------- the incident page
  function pin({el, caption}) {
    let base = null, marker = null;
    return {
      async show(i) {
        const loc = Array.isArray(i.location) && i.location.length >= 2 ? i.location.map(Number) : null;
        const geo = await areas();
        const feats = parishesOf(geo);
        const code = codeOf(i, feats);
        if (!base) {
          base = baseMap(el, geo, f => (f.properties.code === code ? {fillColor: FILL[i.severity] || FILL.informational, fillOpacity: 0.55} : {}),
            f => f.properties.name);
          for (const l of base.byCode.values()) l.bindTooltip(esc(l.feature.properties.name), {sticky: true});
        }
        const name = code ? base.byCode.get(code).feature.properties.name : '';
        if (loc) {
          const at = [loc[1], loc[0]];
          if (!marker) marker = L.marker(at, {title: i.title, alt: t('map.pin'), keyboard: true}).addTo(base.map);
          marker.setLatLng(at).bindTooltip(esc(`${i.title}${name ? ' · ' + name : ''}`));
          if (!base.bounds.contains(at)) base.map.fitBounds(L.latLngBounds([base.bounds.getSouthWest(), base.bounds.getNorthEast()]).extend(at), {padding: [10, 10]});
        }
        caption.textContent = loc
          ? t('map.pinat', {lat: loc[1].toFixed(5), lon: loc[0].toFixed(5), parish: name || t('map.outside')})
          : t('map.nolocation') + (name ? ` · ${name}` : '');
        el.dataset.parish = code;
        el.dataset.ready = 'true';
      },
    };
  }

  // ---------------------------------------------------------------- the warning editor's area tool
  // Parishes add/remove DICOFRE geocodes (in `input`, the draft's text field); drawn polygons are
  // closed rings of [lat, lon] (the draft format); saved areas are named sets of both, kept in this
  // browser's localStorage ('atalaia.savedAreas').
  const SAVED = 'atalaia.savedAreas';
  function areaTool({el, input, list, polys, drawBtn, closeBtn, undoBtn, cancelBtn, help, saved, savedName, saveBtn, useBtn, deleteBtn, disabled, onChange}) {
    let base = null, feats = [], polygons = [], drawing = null;
    const drawn = [];
    const codes = () => input.value.split(/[\s,;]+/).filter(Boolean);
    const round = v => Math.round(v * 1e5) / 1e5;
    function setCodes(next) {
      input.value = [...new Set(next)].join(', ');
      input.dispatchEvent(new Event('input', {bubbles: true}));  // the editor's live preview
      paint();
    }
    function changed() { paintPolygons(); onChange(); }
    function toggle(code) {
      if (disabled() || drawing) return;
      const now = codes();
      setCodes(now.includes(code) ? now.filter(c => c !== code) : [...now, code]);
    }
    function paint() {
      const chosen = new Set(codes());
      if (base) {
        for (const [c, l] of base.byCode) {
          const on = chosen.has(c);
          l.setStyle({fillColor: on ? PICKED : EMPTY, fillOpacity: on ? 0.6 : 0.9, color: on ? '#ffffff' : EDGE, weight: on ? 2.5 : 1.5});
          const path = l.getElement();
          if (path) {
            path.setAttribute('aria-pressed', String(on));
            path.setAttribute('aria-label', `${l.feature.properties.name} (${c})${on ? ' · ' + t('map.inarea') : ''}`);
          }
        }
      }
      for (const box of list.querySelectorAll('input[data-code]')) box.checked = chosen.has(box.dataset.code);
    }
    function paintPolygons() {
      for (const d of drawn.splice(0)) d.remove();
      if (base) for (const p of polygons) drawn.push(L.polygon(p, {color: PICKED, weight: 3, dashArray: '6 4', fillOpacity: 0.2, interactive: false}).addTo(base.map));
      polys.innerHTML = polygons.map((p, k) => `<li>${esc(t('map.polygon', {n: k + 1, points: p.length - 1}))}
        <button type="button" data-remove="${k}">${esc(t('map.remove'))}</button></li>`).join('');
    }
    // drawing: click points on the map, then close (the button, the first point, or Enter); Esc cancels
    let sketch = null;
    function showSketch() {
      if (sketch) sketch.remove();
      sketch = null;
      if (!drawing || !base) return;
      sketch = L.layerGroup([L.polyline(drawing, {color: PICKED, weight: 2, dashArray: '4 4', interactive: false}),
        ...drawing.map((p, k) => L.circleMarker(p, {radius: k === 0 ? 7 : 4, color: PICKED, fillOpacity: 1, interactive: k === 0})
          .on('click', ev => { L.DomEvent.stopPropagation(ev); if (k === 0) finish(); }))]).addTo(base.map);
      closeBtn.disabled = drawing.length < 3;
      undoBtn.disabled = drawing.length === 0;
      help.textContent = t('map.drawhelp', {n: drawing.length});
    }
    function startDraw() {
      if (disabled()) return;
      drawing = [];
      el.classList.add('drawing');
      drawBtn.hidden = true; closeBtn.hidden = undoBtn.hidden = cancelBtn.hidden = false;
      showSketch();
    }
    function stopDraw() {
      drawing = null;
      el.classList.remove('drawing');
      drawBtn.hidden = false; closeBtn.hidden = undoBtn.hidden = cancelBtn.hidden = true;
      help.textContent = '';
      showSketch();
    }
    function finish() {
      if (!drawing || drawing.length < 3) return;
      polygons.push([...drawing, drawing[0]]);
      stopDraw();
      changed();
    }
    drawBtn.addEventListener('click', startDraw);
    closeBtn.addEventListener('click', finish);
    undoBtn.addEventListener('click', () => { if (drawing) { drawing.pop(); showSketch(); } });
    cancelBtn.addEventListener('click', stopDraw);
    el.addEventListener('keydown', ev => {
      if (!drawing) return;
      if (ev.key === 'Escape') { ev.preventDefault(); stopDraw(); }
      if (ev.key === 'Enter') { ev.preventDefault(); finish(); }
    });
    polys.addEventListener('click', ev => {
      const b = ev.target.closest('button[data-remove]');
      if (!b || disabled()) return;
      polygons.splice(Number(b.dataset.remove), 1);
      changed();
    });
    list.addEventListener('change', ev => {
      const box = ev.target.closest('input[data-code]');
      if (!box) return;
      const now = codes().filter(c => c !== box.dataset.code);
      setCodes(box.checked ? [...now, box.dataset.code] : now);
    });
    input.addEventListener('input', paint);

    // saved areas (this browser)
    const store = () => { try { return JSON.parse(localStorage.getItem(SAVED) || '{}') || {}; } catch (e) { return {}; } };
    function fillSaved(sel) {
      const all = store();
      saved.innerHTML = `<option value="">${esc(t('map.savednone'))}</option>` + Object.keys(all).sort().map(n =>
        `<option value="${esc(n)}">${esc(n)} (${esc(t('map.savedsummary', {codes: (all[n].geocodes || []).length, polygons: (all[n].polygons || []).length}))})</option>`).join('');
      saved.value = sel && all[sel] ? sel : '';
    }
    saveBtn.addEventListener('click', () => {
      const name = savedName.value.trim();
      if (!name) { help.textContent = t('map.needname'); savedName.focus(); return; }
      const all = store();
      all[name] = {geocodes: codes(), polygons: polygons.map(p => p.map(q => [...q]))};
      localStorage.setItem(SAVED, JSON.stringify(all));
      fillSaved(name);
      help.textContent = t('map.saved', {name});
    });
    useBtn.addEventListener('click', () => {
      const a = store()[saved.value];
      if (!a || disabled()) return;
      polygons = (a.polygons || []).map(p => p.map(q => [Number(q[0]), Number(q[1])]));
      paintPolygons();
      setCodes(a.geocodes || []);  // one input event: the preview takes both
      help.textContent = t('map.used', {name: saved.value});
    });
    deleteBtn.addEventListener('click', () => {
      const all = store();
      if (!saved.value || !all[saved.value]) return;
      delete all[saved.value];
      localStorage.setItem(SAVED, JSON.stringify(all));
      fillSaved('');
    });
    fillSaved('');

    // a draft's polygon(s): one list of pairs, a list of them, or CAP's "lat,lon lat,lon" text
    function normalise(v) {
      if (!v) return [];
      const pairs = p => (typeof p === 'string' ? p.trim().split(/\s+/) : p).map(q => (typeof q === 'string' ? q.split(',') : q).map(Number));
      if (typeof v === 'string') return [pairs(v)];
      if (Array.isArray(v) && v.length && (typeof v[0] === 'string' || typeof v[0][0] === 'number')) {
        return typeof v[0] === 'string' && v[0].includes(' ') ? v.map(pairs) : [pairs(v)];
      }
      return v.map(pairs);
    }
    const ready = areas().then(geo => {
      feats = parishesOf(geo);
      list.innerHTML = feats.map(f => `<label class="inline"><input type="checkbox" data-code="${esc(f.properties.code)}">
        ${esc(f.properties.name)} <span class="muted">${esc(f.properties.code)}</span></label>`).join('');
      base = baseMap(el, geo, () => ({}), f => `${f.properties.name} (${f.properties.code})`);
      for (const [c, l] of base.byCode) {
        l.bindTooltip(esc(`${l.feature.properties.name} (${c})`), {sticky: true});
        l.on('click', () => toggle(c));
      }
      base.map.on('click', ev => {
        if (!drawing) return;
        drawing.push([round(ev.latlng.lat), round(ev.latlng.lng)]);
        showSketch();
      });
      el.dataset.ready = 'true';
      paint();
      paintPolygons();
    }).catch(e => { help.textContent = t('map.unavailable', {why: e.message}); });
    return {
      ready,
      load(v) { polygons = normalise(v); paint(); paintPolygons(); },
      polygons: () => polygons.map(p => p.map(q => [...q])),
      sync: paint,
    };
  }

  return {areas, codeOf, fold, board, pin, areaTool, SEVS, FILL};
})();
