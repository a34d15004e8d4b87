// The console's only script: draws each page's charts with uPlot from the page's JSON block
// (id "charts"), and reloads the page every 15 s while the operator keeps "refresh" ticked. Pages
// are complete as served; nothing else is fetched.
(() => {
  const COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#b45309"];
  const REFRESH_KEY = "fleetspeak-console-refresh";
  const REFRESH_MS = 15000;

  function drawCharts() {
    const block = document.getElementById("charts");
    if (!block || typeof uPlot === "undefined") return;
    const specs = JSON.parse(block.textContent);
    for (const el of document.querySelectorAll(".chart[data-chart]")) {
      const spec = specs[el.dataset.chart];
      if (!spec || spec.x.length === 0) continue;
      const right = spec.series.some((s) => s.right);
      const series = [{}].concat(
        spec.series.map((s, i) => ({
          label: s.label,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          scale: s.right ? "right" : "y",
          spanGaps: true,
          points: { show: spec.x.length < 4 },
        })),
      );
      const axes = [{}, { scale: "y", size: 48 }];
      if (right) axes.push({ scale: "right", side: 1, size: 48, grid: { show: false }, label: spec.rightUnit });
      const data = [spec.x].concat(spec.series.map((s) => s.values));
      const width = Math.max(280, el.clientWidth);
      new uPlot({ title: spec.title, width, height: 180, series, axes, scales: { x: { time: true } } }, data, el);
    }
  }

  function autoRefresh() {
    const box = document.getElementById("auto-refresh");
    if (!box) return;
    let timer;
    const arm = () => {
      clearTimeout(timer);
      if (box.checked) timer = setTimeout(() => location.reload(), REFRESH_MS);
    };
    box.checked = localStorage.getItem(REFRESH_KEY) === "on";
    box.addEventListener("change", () => {
      localStorage.setItem(REFRESH_KEY, box.checked ? "on" : "off");
      arm();
    });
    arm();
  }

  drawCharts();
  autoRefresh();
  // Tests and screenshots wait for this.
  document.body.dataset.ready = "true";
})();
