"""The page's own script: box / click / brush input on the frame canvas, the timeline, keyboard shortcuts.

Every input becomes a small JSON command (``{"type": "box", ...}``) that the script hands to the hidden ``#cmd-go``
button; its event reads the command through :data:`TAKE_COMMAND` and :func:`rdevos_web.app` applies it. Coordinates
are in pixels of the frame (not of the screen), so the zoom of the page does not matter.
"""

from __future__ import annotations

__all__ = ["SETUP", "TAKE_COMMAND", "SAVED_JOB", "REMEMBER_JOB"]

_CSS = r"""
#preview img { object-fit: contain !important; }
#canvas img { object-fit: contain !important; cursor: crosshair; user-select: none; -webkit-user-drag: none; }
#rd-band { position: fixed; border: 2px dashed #fff; outline: 1px solid #000; pointer-events: none; z-index: 50;
           display: none; }
#rd-ink { position: fixed; pointer-events: none; z-index: 50; }
#rd-tl { display: flex; height: 22px; border: 1px solid #888; border-radius: 3px; overflow: hidden; }
#rd-tl .rd-c { flex: 1 1 0; min-width: 1px; background: #ddd; cursor: pointer; border-right: 1px solid #fff; }
#rd-tl .rd-c.res { background: #7fb3e6; }
#rd-tl .rd-c.ann { background: #444; }
#rd-tl .rd-c.cur { outline: 3px solid #000; outline-offset: -3px; }
.rd-legend { font-size: 0.85em; margin-top: 2px; }
.rd-legend span { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 3px 0 10px; }
.rd-obj { display: flex; align-items: center; gap: 8px; padding: 3px 6px; cursor: pointer; border-radius: 4px; }
.rd-obj.sel { background: rgba(0, 0, 0, 0.08); font-weight: 600; }
.rd-obj.hid { opacity: 0.5; }
.rd-sw { width: 18px; height: 18px; border-radius: 3px; border: 1px solid #0006; flex: none; }
"""

#: Runs once on page load: defines ``window.rdevos`` and installs the listeners (event delegation on the document,
#: so they survive Gradio re-rendering the image).
SETUP = r"""
() => {
  if (window.rdevos) return;
  const style = document.createElement('style');
  style.textContent = __CSS__;
  document.head.appendChild(style);
  const queue = [];
  const R = window.rdevos = {
    send(cmd) {
      queue.push(JSON.stringify(cmd));
      let b = document.querySelector('#cmd-go');
      if (b && b.tagName !== 'BUTTON') b = b.querySelector('button');
      if (b) b.click();
    },
    take() { return queue.shift() || ''; },
    tool() {
      const el = document.querySelector('#tool input:checked');
      const text = el ? ((el.closest('label') || {}).textContent || el.value || '') : '';
      return /eraser/i.test(text) ? 'erase' : /brush/i.test(text) ? 'brush' : 'prompt';
    },
    radius() {
      const el = document.querySelector('#brush-size input[type=number]');
      return Math.max(1, parseFloat(el ? el.value : '8') || 8);
    },
    clickLabel(sel, re) {
      const l = [...document.querySelectorAll(sel + ' label')].find(x => re.test(x.textContent));
      if (l) l.click();
    },
  };
  const band = document.createElement('div'); band.id = 'rd-band'; document.body.appendChild(band);
  const ink = document.createElement('canvas'); ink.id = 'rd-ink'; document.body.appendChild(ink);
  // Screen position -> frame pixel (the image is drawn with object-fit: contain, centred).
  function geom(img) {
    const r = img.getBoundingClientRect();
    const nw = img.naturalWidth, nh = img.naturalHeight;
    if (!nw || !nh) return null;
    const s = Math.min(r.width / nw, r.height / nh);
    return {r, s, ox: r.left + (r.width - nw * s) / 2, oy: r.top + (r.height - nh * s) / 2, nw, nh};
  }
  function toFrame(g, e) {
    return [Math.min(Math.max((e.clientX - g.ox) / g.s, 0), g.nw - 0.01),
            Math.min(Math.max((e.clientY - g.oy) / g.s, 0), g.nh - 0.01)];
  }
  let drag = null;
  const on = (e, sel) => e.target.closest && e.target.closest(sel);
  document.addEventListener('contextmenu', e => { if (on(e, '#canvas img')) e.preventDefault(); });
  document.addEventListener('dragstart', e => { if (on(e, '#canvas')) e.preventDefault(); });
  document.addEventListener('mousedown', e => {
    const img = e.target.closest && e.target.closest('#canvas img');
    if (!img) return;
    const g = geom(img);
    if (!g) return;
    e.preventDefault();
    drag = {g, tool: R.tool(), x: e.clientX, y: e.clientY, button: e.button, shift: e.shiftKey, moved: false,
            pts: [toFrame(g, e)]};
    if (drag.tool !== 'prompt') {
      ink.style.left = g.ox + 'px'; ink.style.top = g.oy + 'px';
      ink.width = Math.round(g.nw * g.s); ink.height = Math.round(g.nh * g.s);
      ink.style.display = 'block';
      const ctx = ink.getContext('2d');
      ctx.clearRect(0, 0, ink.width, ink.height);
      ctx.lineCap = ctx.lineJoin = 'round';
      ctx.lineWidth = 2 * R.radius() * g.s;
      ctx.strokeStyle = drag.tool === 'erase' ? 'rgba(0,0,0,0.6)' : 'rgba(255,255,255,0.7)';
    }
  });
  document.addEventListener('mousemove', e => {
    if (!drag) return;
    const d = drag, g = d.g;
    if (Math.abs(e.clientX - d.x) + Math.abs(e.clientY - d.y) > 4) d.moved = true;
    if (d.tool === 'prompt') {
      if (!d.moved) return;
      band.style.display = 'block';
      band.style.left = Math.min(d.x, e.clientX) + 'px'; band.style.top = Math.min(d.y, e.clientY) + 'px';
      band.style.width = Math.abs(e.clientX - d.x) + 'px'; band.style.height = Math.abs(e.clientY - d.y) + 'px';
    } else {
      const p = toFrame(g, e), q = d.pts[d.pts.length - 1];
      if (Math.hypot(p[0] - q[0], p[1] - q[1]) * g.s < 2) return;
      d.pts.push(p);
      const ctx = ink.getContext('2d');
      ctx.beginPath(); ctx.moveTo(q[0] * g.s, q[1] * g.s); ctx.lineTo(p[0] * g.s, p[1] * g.s); ctx.stroke();
    }
  });
  document.addEventListener('mouseup', e => {
    if (!drag) return;
    const d = drag; drag = null;
    band.style.display = 'none';
    const p = toFrame(d.g, e);
    if (d.tool === 'prompt') {
      if (d.moved) {
        const a = d.pts[0];
        R.send({type: 'box', box: [Math.min(a[0], p[0]), Math.min(a[1], p[1]), Math.max(a[0], p[0]),
                                   Math.max(a[1], p[1])]});
      } else {
        R.send({type: 'point', x: p[0], y: p[1], positive: !(d.shift || e.shiftKey || d.button === 2)});
      }
    } else {
      if (d.moved) d.pts.push(p);
      R.send({type: 'stroke', points: d.pts, radius: R.radius(), erase: d.tool === 'erase'});
      setTimeout(() => { ink.style.display = 'none'; }, 400);
    }
  });
  document.addEventListener('click', e => {
    const cell = e.target.closest && e.target.closest('#rd-tl [data-frame]');
    if (cell) { R.send({type: 'frame', frame: parseInt(cell.dataset.frame, 10)}); return; }
    const obj = e.target.closest && e.target.closest('.rd-obj[data-obj]');
    if (obj) R.send({type: 'object', id: parseInt(obj.dataset.obj, 10)});
  });
  document.addEventListener('change', e => {
    const inp = e.target;
    if (inp && inp.matches && inp.matches('#upload input[type=file]') && inp.files && inp.files.length) {
      R.send({type: 'upload', files: [...inp.files].map(f => ({name: f.name, size: f.size}))});
    }
  }, true);
  document.addEventListener('keydown', e => {
    const t = e.target;
    if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    let handled = true;
    if (k === 'ArrowRight' || k === '.') R.send({type: 'step', delta: e.shiftKey ? 10 : 1});
    else if (k === 'ArrowLeft' || k === ',') R.send({type: 'step', delta: e.shiftKey ? -10 : -1});
    else if (k === 'Home') R.send({type: 'frame', frame: 0});
    else if (k === 'End') R.send({type: 'frame', frame: 1e9});
    else if (k === ' ') { const b = document.querySelector('#play'); if (b) b.click(); }
    else if (k === 'b') R.clickLabel('#tool', /box/i);
    else if (k === 'd') R.clickLabel('#tool', /brush/i);
    else if (k === 'e') R.clickLabel('#tool', /eraser/i);
    else if (k === 'n') { const b = document.querySelector('#obj-add'); if (b) b.click(); }
    else if (k === 'Escape') R.send({type: 'reset'});
    else if (/^[1-9]$/.test(k)) R.send({type: 'object', index: parseInt(k, 10) - 1});
    else handled = false;
    if (handled) e.preventDefault();
  });
}
""".replace("__CSS__", repr(_CSS.strip()).replace("\\n", " "))

#: The ``js`` of the ``#cmd-go`` event: its first input becomes the next queued command.
TAKE_COMMAND = "(cmd, ...rest) => [window.rdevos ? window.rdevos.take() : '', ...rest]"

#: The ``js`` of the page load: the job this browser had open (``?job=`` in the address, else local storage).
SAVED_JOB = ("(x) => [new URLSearchParams(window.location.search).get('job') || "
             "window.localStorage.getItem('rdevos-job') || '']")

#: Remembers the open job in this browser (survives reloads and server restarts).
REMEMBER_JOB = ("(j) => { try { if (j) { localStorage.setItem('rdevos-job', j); } else { "
                "localStorage.removeItem('rdevos-job'); } const u = new URL(window.location.href); "
                "if (j) u.searchParams.set('job', j); else u.searchParams.delete('job'); "
                "history.replaceState(null, '', u); } catch (err) {} return [j]; }")
