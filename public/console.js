// The console's live tables (queues, flow instances, connections): server-sent events bring fresh
// rows every few seconds and the cells are updated in place, so focus and scroll stay where the
// reader left them. Rows are matched by their data attribute; a row the stream no longer sends
// (a right taken away, an instance gone) keeps its last values.
(function () {
  var status = document.getElementById('live-status');
  if (!window.EventSource || !status) return;
  var pages = [
    { table: 'queues', event: 'stats', attr: 'data-address', id: function (r) { return r.address; }, keys: ['depth', 'inFlight', 'rate', 'oldest', 'deadLetters'],
      url: function () { return '/admin/queues/live'; },
      mark: function (k, v, td) { if (k === 'deadLetters') td.className = v > 0 ? 'overdue' : ''; } },
    { table: 'instances', event: 'instances', attr: 'data-instance', id: function (r) { return r.flow + '/' + r.instanceId; }, keys: ['status', 'updatedAt'],
      url: function (table) {
        var q = Array.prototype.map.call(table.querySelectorAll('tr[data-instance]'), function (tr) { return 'i=' + encodeURIComponent(tr.getAttribute('data-instance')); });
        return '/admin/flows/live?' + q.join('&');
      },
      mark: function (k, v, td) { if (k === 'status') td.className = 'status status-' + v; } },
    { table: 'connections', event: 'connections', attr: 'data-key', id: function (r) { return r.key; }, keys: ['state', 'outbox', 'nextRetry', 'lastError'],
      url: function () { return '/admin/connections/live'; },
      mark: function (k, v, td, r) { if (k === 'state') td.className = r.ok ? '' : 'overdue'; } },
  ];
  pages.forEach(function (page) {
    var table = document.getElementById(page.table);
    if (!table) return;
    var rows = {};
    Array.prototype.forEach.call(table.querySelectorAll('tr[' + page.attr + ']'), function (tr) { rows[tr.getAttribute(page.attr)] = tr; });
    var source = new EventSource(page.url(table));
    source.addEventListener(page.event, function (e) {
      JSON.parse(e.data).forEach(function (r) {
        var tr = rows[page.id(r)];
        if (!tr) return;
        page.keys.forEach(function (k) {
          var td = tr.querySelector('[data-k="' + k + '"]');
          if (!td) return;
          if (td.textContent !== String(r[k])) td.textContent = String(r[k]);
          page.mark(k, r[k], td, r);
        });
      });
      status.textContent = 'Live, updated ' + new Date().toLocaleTimeString() + '.';
      table.setAttribute('data-updated', String(Date.now()));
    });
    source.addEventListener('end', function () { source.close(); status.textContent = 'Live updates ended; reload the page.'; });
    source.onerror = function () { status.textContent = 'Lost the connection; retrying…'; };
  });
})();
