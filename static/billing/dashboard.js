// Draws the dashboard's charts with uPlot from the figures the page embeds (id "dashboard-data").
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var days = data.days.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; });
  var width = function (element) { return Math.max(480, element.clientWidth || 520); };
  var numbers = function (values) { return values.map(Number); };

  function chart(elementId, series, values, options) {
    var element = document.getElementById(elementId);
    var opts = Object.assign({ width: width(element), height: 260, series: [{}].concat(series) }, options || {});
    return new uPlot(opts, [options && options.x ? options.x : days].concat(values), element);
  }

  chart("chart-credits", [{ label: "Credits used", stroke: "#417690", fill: "rgba(65,118,144,0.15)" }],
        [data.credits_used]);
  chart("chart-money", [
    { label: "Revenue", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)" },
    { label: "Gross margin", stroke: "#ef6c00" },
  ], [numbers(data.revenue_usd), numbers(data.gross_margin_usd)]);
  chart("chart-coupons", [{ label: "Redemptions", stroke: "#6a1b9a", paths: uPlot.paths.bars({ size: [0.6, 40] }),
                            fill: "rgba(106,27,154,0.35)" }], [data.coupon_redemptions]);

  var tiers = Object.keys(data.active_subscriptions_by_tier);
  chart("chart-tiers", [{ label: "Active subscriptions", stroke: "#417690", fill: "rgba(65,118,144,0.45)",
                          paths: uPlot.paths.bars({ size: [0.6, 60] }) }],
        [tiers.map(function (tier) { return data.active_subscriptions_by_tier[tier]; })],
        { x: tiers.map(function (_, index) { return index; }),
          scales: { x: { time: false, range: [-0.5, Math.max(tiers.length, 1) - 0.5] } },
          axes: [{ values: function (_, ticks) { return ticks.map(function (tick) { return tiers[tick] || ""; }); } }, {}] });
  document.body.setAttribute("data-charts-rendered", "true");
}());
