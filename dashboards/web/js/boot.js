// Role: loaded first, as a classic script, before any module. It records every uncaught
// error, unhandled rejection and file that failed to load in <html data-errors="..."> and
// shows them in a banner, so people see them and the browser test fails on them, even
// when a module cannot load at all.
(function () {
  'use strict';
  var root = document.documentElement;
  var MAX_ERRORS = 20;
  var count = 0;

  function record(message) {
    count += 1;
    if (count > MAX_ERRORS) return;
    if (count === MAX_ERRORS) message = '(further errors are not shown)';
    var previous = root.getAttribute('data-errors');
    var all = previous ? previous + '\n' + message : message;
    root.setAttribute('data-errors', all);
    var box = document.getElementById('js-errors');
    if (box) {
      box.hidden = false;
      box.textContent = 'Dashboard error (please report): ' + all;
    }
  }

  window.addEventListener('error', function (event) {
    var target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      record('Failed to load ' + (target.src || target.href));
      return;
    }
    var where = event.filename ? ' at ' + event.filename + ':' + event.lineno : '';
    var message = event.message || String(event.error);
    record((/^Uncaught/.test(message) ? '' : 'Uncaught ') + message + where);
  }, true);

  window.addEventListener('unhandledrejection', function (event) {
    var reason = event.reason;
    record('Unhandled rejection: ' + ((reason && reason.stack) || String(reason)));
  });
})();
