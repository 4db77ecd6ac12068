// Re-fetch the page's content every data-refresh ms and swap it in, so the
// page follows the fleet without a reload. Nothing else runs here.
(function () {
  var main = document.getElementById("content");
  var live = document.getElementById("live");
  if (!main) return;
  var every = parseInt(main.getAttribute("data-refresh"), 10) || 2000;
  function refresh() {
    var url = location.pathname + "?partial=1";
    fetch(url, { cache: "no-store" }).then(function (r) {
      return r.text();
    }).then(function (html) {
      main.innerHTML = html;
      live.className = "live";
      live.setAttribute("data-updated", new Date().toISOString());
    }).catch(function () {
      live.className = "live stale";
    }).finally(function () {
      setTimeout(refresh, every);
    });
  }
  setTimeout(refresh, every);
})();
