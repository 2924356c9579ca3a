// Draws the dashboard's charts with uPlot from the chart descriptions the page embeds (id "dashboard-data"):
// each chart names its x values, its series and the axis each series is drawn on.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var days = data.days.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; });
  var colours = ["#2e7d32", "#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#ef6c00"];
  var wholeSteps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000,
                    500000, 1000000, 2000000, 5000000, 10000000];

  function scale(axis) {
    if (!axis.begin_at_zero) { return {}; }
    return { range: function (_, min, max) { return [Math.min(0, min), max > 0 ? max * 1.1 : 1]; } };
  }

  function yAxis(id, axis, index) {
    var options = { scale: id, label: axis.label, size: 70, side: index === 0 ? 3 : 1, grid: { show: index === 0 } };
    if (axis.integer) {
      options.incrs = wholeSteps;
      options.values = function (_, ticks) { return ticks.map(function (tick) { return String(tick); }); };
    }
    return options;
  }

  function draw(chart) {
    var element = document.getElementById(chart.element);
    var categories = chart.x === "categories";
    var x = categories ? chart.categories.map(function (_, index) { return index; }) : days;
    var scales = { x: categories ? { time: false, range: [-0.5, Math.max(x.length, 1) - 0.5] } : {} };
    var axes = [categories ? { incrs: [1], values: function (_, ticks) {
      return ticks.map(function (tick) { return chart.categories[tick] || ""; });
    } } : {}];
    Object.keys(chart.axes).forEach(function (id, index) {
      scales[id] = scale(chart.axes[id]);
      axes.push(yAxis(id, chart.axes[id], index));
    });
    var series = chart.series.map(function (item, index) {
      var colour = colours[index % colours.length];
      var drawn = { label: item.label, scale: item.axis, stroke: colour };
      if (chart.bars) {
        drawn.paths = uPlot.paths.bars({ size: [0.6, 60] });
        drawn.fill = colour + "66";
      }
      return drawn;
    });
    var values = chart.series.map(function (item) { return item.values.map(Number); });
    var options = { width: Math.max(480, element.clientWidth), height: 300, scales: scales, axes: axes,
                    series: [{}].concat(series) };
    return new uPlot(options, [x].concat(values), element);
  }

  data.charts.forEach(draw);
  document.body.setAttribute("data-charts-rendered", "true");
}());
