// The analytics page's charts, drawn with uPlot (hub/static/vendor/uplot, MIT) from the JSON the
// page carries in #chart-data. Every figure is also in the table beside its chart.
"use strict";
(function () {
  var COLORS = ["#2563eb", "#f59e0b"];

  function barsPaths(index, count) {
    if (count === 1) { return uPlot.paths.bars({size: [0.6, 48]}); }
    return uPlot.paths.bars({size: [0.35, 24], align: index === 0 ? -1 : 1});
  }

  function draw(element, chart) {
    var labels = chart.labels;
    var n = labels.length;
    var xs = labels.map(function (_, i) { return i; });
    var bars = chart.kind === "bars";
    var series = [{label: "", value: function (u, i) { return i == null ? "" : labels[i]; }}];
    chart.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      series.push({
        label: s.label, stroke: color, width: 2, spanGaps: false,
        fill: bars ? color : undefined,
        paths: bars ? barsPaths(i, chart.series.length) : undefined,
        points: {show: !bars, size: 7, fill: color, stroke: color}
      });
    });
    var options = {
      width: Math.max(element.clientWidth || 0, 320), height: 220,
      legend: {show: chart.series.length > 1},
      cursor: {drag: {x: false, y: false}},
      scales: {
        x: {time: false, range: function () { return [-0.5, n - 0.5]; }},
        y: {range: function (u, min, max) { return [Math.min(0, min || 0), max > 0 ? max * 1.1 : 1]; }}
      },
      axes: [
        {values: function (u, splits) {
          return splits.map(function (i) { return Number.isInteger(i) && i >= 0 && i < n ? labels[i] : ""; });
        }, incrs: [1, 2, 4, 7, 12, 24, 48]},
        {}
      ],
      series: series
    };
    var data = [xs].concat(chart.series.map(function (s) { return s.values; }));
    return new uPlot(options, data, element);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("chart-data");
    if (!source || typeof uPlot === "undefined") { return; }
    var charts = JSON.parse(source.textContent);
    Object.keys(charts).forEach(function (id) {
      var element = document.getElementById("chart-" + id);
      if (element) {
        draw(element, charts[id]);
        element.setAttribute("data-drawn", "true");
      }
    });
  });
})();
