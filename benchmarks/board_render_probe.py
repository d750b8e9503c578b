"""The incident board's main thread in a storm: 1 500 incidents changing at 1 000 changes/s, fed
straight to the page's ``upsert`` (what the stream's handler calls), with the page's long tasks
(PerformanceObserver 'longtask', > 50 ms) and each render's time recorded. Needs a console
(``atalaia up``) and Debian chromium.

    python -m benchmarks.board_render_probe --url http://127.0.0.1:8080 --seconds 15

Half the incidents name their parish in a label, half only have a location (the map finds their
parish by point-in-polygon)."""

from __future__ import annotations

import argparse
import json
import shutil

INIT = """
window.longTasks = [];
new PerformanceObserver(l => { for (const e of l.getEntries()) longTasks.push(e.duration); })
  .observe({type: 'longtask', buffered: true});
"""

STORM = """
async ([n, rate, seconds]) => {
  const parishes = ['Bonfim', 'Campanhã', 'Paranhos', 'Ramalde', 'Lordelo do Ouro'];
  const sevs = ['critical', 'high', 'medium', 'low'];
  const times = [];
  const realRender = render;
  render = function () { const t = performance.now(); realRender(); times.push(performance.now() - t); };
  const mapTimes = [];
  const realUpdate = boardMap.update.bind(boardMap);
  boardMap.update = open => { const t = performance.now(); realUpdate(open); mapTimes.push(performance.now() - t); };
  let upsertMs = 0;
  const realUpsert = upsert;
  upsert = i => { const t = performance.now(); realUpsert(i); upsertMs += performance.now() - t; };
  const base = Date.now();
  const inc = k => {
    const v = (versions[k] = (versions[k] || 0) + 1);
    const lon = -8.68 + (k % 37) * 0.002, lat = 41.14 + (k % 23) * 0.002;
    return {id: `storm-${k}`, version: v, state: v % 3 ? 'unacknowledged' : 'acknowledged',
      severity: sevs[(k + v) % 4], title: `Storm incident ${k}`, active: true,
      labels: k % 2 ? {team: 'hydro', parish: parishes[k % parishes.length]} : {team: 'hydro'},
      correlation: {}, location: [lon, lat], alarm_count: v, opened_at: new Date(base - k * 1000).toISOString(),
      updated_at: new Date().toISOString(), actions: ['acknowledge', 'shelve'], queued_at: Date.now() / 1000};
  };
  const versions = {};
  longTasks.length = 0;
  const t0 = performance.now();
  let k = 0;
  const perTick = Math.round(rate / 10);
  await new Promise(done => {
    const iv = setInterval(() => {
      for (let j = 0; j < perTick; j++) { upsert(inc(k % n)); k++; }
      if (performance.now() - t0 >= seconds * 1000) { clearInterval(iv); done(); }
    }, 100);
  });
  await new Promise(r => setTimeout(r, 1000));
  render = realRender; upsert = realUpsert; boardMap.update = realUpdate;
  const sum = a => a.reduce((x, y) => x + y, 0);
  const sorted = [...times].sort((a, b) => a - b);
  return {changes: k, wall_ms: performance.now() - t0, long_tasks: longTasks.length,
    long_ms: Math.round(sum(longTasks)), long_max_ms: Math.round(Math.max(0, ...longTasks)),
    renders: times.length, render_ms_median: Math.round(sorted[sorted.length >> 1] || 0),
    render_ms_max: Math.round(sorted[sorted.length - 1] || 0), rows: tbody.children.length,
    render_ms_total: Math.round(sum(times)), map_ms_total: Math.round(sum(mapTimes)), upsert_ms_total: Math.round(upsertMs)};
}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--incidents", type=int, default=1500)
    ap.add_argument("--rate", type=int, default=1000, help="changes per second")
    ap.add_argument("--seconds", type=float, default=15)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(locale="pt-PT", viewport={"width": 1280, "height": 900})
        page.add_init_script(INIT)
        page.goto(args.url + "/")
        page.wait_for_function(
            "loaded === true && document.getElementById('map-box').dataset.ready", timeout=30000
        )
        result = page.evaluate(STORM, [args.incidents, args.rate, args.seconds])
        browser.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
