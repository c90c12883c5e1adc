// The permissions console: group names from the directory as you type, the pattern checked as
// you type with the known addresses it matches, and a confirmation before a revert.
(function () {
  var who = document.getElementById('r-who');
  var kind = document.getElementById('r-kind');
  var list = document.getElementById('group-suggestions');
  var address = document.getElementById('r-address');
  var check = document.getElementById('address-check');
  function debounce(fn, ms) { var t; return function () { clearTimeout(t); t = setTimeout(fn, ms); }; }
  if (who && list) {
    who.addEventListener('input', debounce(function () {
      if (kind.value !== 'group') { list.innerHTML = ''; return; }
      fetch('/admin/permissions/groups?q=' + encodeURIComponent(who.value), { credentials: 'same-origin', redirect: 'manual' })
        .then(function (r) { return r.ok ? r.json() : { groups: [] }; })
        .then(function (d) {
          list.innerHTML = '';
          d.groups.forEach(function (g) { var o = document.createElement('option'); o.value = g; list.appendChild(o); });
        }).catch(function () {});
    }, 200));
  }
  if (address && check) {
    address.addEventListener('input', debounce(function () {
      if (!address.value) return;
      fetch('/admin/permissions/check?address=' + encodeURIComponent(address.value), { credentials: 'same-origin', redirect: 'manual' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d) return;
          address.setAttribute('aria-invalid', d.ok ? 'false' : 'true');
          check.className = d.ok ? 'muted' : 'error';
          check.textContent = d.ok
            ? (d.matches.length ? 'Valid. Matches known addresses: ' + d.matches.join(', ') : 'Valid. It matches no address known right now.')
            : d.error;
        }).catch(function () {});
    }, 250));
  }
  Array.prototype.forEach.call(document.querySelectorAll('form.revert'), function (f) {
    f.addEventListener('submit', function (e) {
      if (!window.confirm('Revert the console rules to version ' + f.getAttribute('data-version') + '? This takes effect at once, everywhere.')) e.preventDefault();
    });
  });
})();
