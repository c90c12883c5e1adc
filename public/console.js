// The console's live queue table: server-sent events bring fresh numbers every few seconds and
// the cells are updated in place (focus and scroll stay where the reader left them).
(function () {
  var table = document.getElementById('queues');
  var status = document.getElementById('live-status');
  if (!table || !window.EventSource) return;
  var source = new EventSource('/admin/queues/live');
  source.addEventListener('stats', function (e) {
    var rows = JSON.parse(e.data);
    rows.forEach(function (q) {
      var tr = table.querySelector('tr[data-address="' + q.address.replace(/"/g, '') + '"]');
      if (!tr) return;
      ['depth', 'inFlight', 'rate', 'oldest', 'deadLetters'].forEach(function (k) {
        var td = tr.querySelector('[data-k="' + k + '"]');
        if (td && td.textContent !== String(q[k])) td.textContent = String(q[k]);
        if (td && k === 'deadLetters') td.className = q[k] > 0 ? 'overdue' : '';
      });
    });
    status.textContent = 'Live, updated ' + new Date().toLocaleTimeString() + '.';
    table.setAttribute('data-updated', String(Date.now()));
  });
  source.addEventListener('end', function () { source.close(); status.textContent = 'Live updates ended; reload the page.'; });
  source.onerror = function () { status.textContent = 'Lost the connection; retrying…'; };
})();
