// Live inbox: server-sent events say a task changed; the list is fetched again and replaced.
(function () {
  var list = document.getElementById('task-list');
  var status = document.getElementById('live-status');
  if (!list || !window.EventSource) return;
  var pending = false;
  // An event while a fetch is in flight must not be dropped: that fetch may have been answered
  // before the change (a rule taken away, a task decided), so one more fetch follows it.
  var stale = false;
  function refresh() {
    if (pending) { stale = true; return; }
    pending = true;
    stale = false;
    fetch(list.getAttribute('data-live') + window.location.search, { credentials: 'same-origin', headers: { accept: 'text/html' }, redirect: 'manual' })
      .then(function (r) {
        if (r.type === 'opaqueredirect' || r.redirected || r.status === 401 || r.url.indexOf('/login') >= 0) {
          status.textContent = 'Your session has expired. Reload the page to sign in again.';
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        // Keep the keyboard user's place: refocus the same task link if it is still there.
        var focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.getAttribute('href') : null;
        list.innerHTML = html;
        if (focused) {
          var again = list.querySelector('a[href="' + focused.replace(/"/g, '') + '"]');
          if (again) again.focus();
        }
      })
      .catch(function () { status.textContent = 'Lost the connection; retrying…'; })
      .then(function () {
        pending = false;
        if (stale) refresh();
      });
  }
  var events = new EventSource('/inbox/events');
  events.addEventListener('task', refresh);
  events.addEventListener('open', function () { status.textContent = 'New tasks appear here by themselves.'; refresh(); });
  events.addEventListener('error', function () { status.textContent = 'Reconnecting…'; });
})();
