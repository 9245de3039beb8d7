"""The page's own script: box / click / brush input on the frame canvas, zoom and pan, the timeline, keyboard
shortcuts, the busy indicator and the confirmations.

Every input becomes a small JSON command (``{"type": "box", ...}``) that the script hands to the hidden ``#cmd-go``
button; its event reads the command through :data:`TAKE_COMMAND` and :func:`rdevos_web.app` applies it; when it is
done, :data:`COMMAND_DONE` runs. Coordinates are in pixels of the frame (not of the screen), so neither the zoom of
the canvas nor that of the page matters. The zoom (``window.rdevos.z``) belongs to the page: the server renders the
frame at its own size and the script scales and moves it inside the canvas.
"""

from __future__ import annotations

__all__ = ["SETUP", "TAKE_COMMAND", "COMMAND_DONE", "SAVED_JOB", "REMEMBER_JOB", "CONFIRM_OBJECT_DELETE",
           "CONFIRM_JOB_DELETE", "ZOOM_BAR"]

_CSS = r"""
#rd-title p { margin: 0; }
#upload [data-testid=upload-text] { font-size: 0.85em; line-height: 1.2; padding-top: 14px; }
#upload [data-testid=upload-icon], #upload .or { display: none; }
#canvas { position: relative; }
#canvas .rd-head { font-size: 0.85em; padding: 2px 4px; color: var(--body-text-color-subdued); }
#canvas .rd-view { position: relative; overflow: hidden; height: clamp(220px, calc(100vh - 420px), 900px);
                   background: #1b1b1b; border-radius: 4px; user-select: none; }
#canvas .rd-img { position: absolute; left: 0; top: 0; transform-origin: 0 0; max-width: none !important;
                  max-height: none !important; object-fit: contain; cursor: crosshair; user-select: none;
                  -webkit-user-drag: none; margin: 0 !important; border-radius: 0 !important; }
#canvas.rd-pan .rd-img { cursor: grab; }
#canvas.rd-busy .rd-view { cursor: progress; }
#canvas.rd-busy .rd-view::after { content: "Computing…"; position: absolute; right: 8px; top: 8px; z-index: 5;
                                  background: rgba(0, 0, 0, 0.75); color: #fff; padding: 2px 10px; border-radius: 4px;
                                  font-size: 0.9em; }
#rd-band { position: fixed; border: 2px dashed #fff; outline: 1px solid #000; pointer-events: none; z-index: 50;
           display: none; }
#rd-ink { position: fixed; pointer-events: none; z-index: 50; }
#rd-cursor { position: fixed; pointer-events: none; z-index: 51; border: 1.5px solid #fff; border-radius: 50%;
             box-shadow: 0 0 0 1px #000; display: none; transform: translate(-50%, -50%); }
#rd-tl { display: flex; height: 18px; border: 1px solid #888; border-radius: 3px; overflow: hidden; }
#rd-tl .rd-c { flex: 1 1 0; min-width: 1px; background: #ddd; cursor: pointer; border-right: 1px solid #fff; }
#rd-tl .rd-c.res { background: #7fb3e6; }
#rd-tl .rd-c.res.stale { background: repeating-linear-gradient(45deg, #7fb3e6 0 3px, #ddd 3px 6px); }
#rd-tl .rd-c.ann { background: #444; }
#rd-tl .rd-c.cur { outline: 3px solid #000; outline-offset: -3px; }
.rd-legend { font-size: 0.85em; margin-top: 2px; }
.rd-legend span { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin: 0 3px 0 10px; }
.rd-obj { display: flex; align-items: center; gap: 8px; padding: 2px 6px; cursor: pointer; border-radius: 4px; }
.rd-obj.sel { background: rgba(0, 0, 0, 0.08); font-weight: 600; }
.rd-obj.hid { opacity: 0.5; }
.rd-sw { width: 16px; height: 16px; border-radius: 3px; border: 1px solid #0006; flex: none; }
#zoom-bar { flex: 0 0 auto !important; min-width: 230px !important; width: auto !important; }
.rd-zoom { display: flex; gap: 2px; align-items: center; flex-wrap: nowrap; height: 100%; }
.rd-zoom button { min-width: 28px; padding: 2px 6px; border: 1px solid var(--border-color-primary);
                  border-radius: 4px; background: var(--button-secondary-background-fill); }
#rd-zoom-level { font-size: 0.8em; min-width: 60px; text-align: center; }
.rd-preview { max-width: 100%; border-radius: 4px; }
.rd-dls { display: flex; flex-direction: column; gap: 2px; }
.rd-dl { text-decoration: underline; }
"""

#: Runs once on page load: defines ``window.rdevos`` and installs the listeners (event delegation on the document,
#: so they survive Gradio re-rendering the canvas).
SETUP = r"""
() => {
  if (window.rdevos) return;
  const style = document.createElement('style');
  style.textContent = __CSS__;
  document.head.appendChild(style);
  const queue = [], taken = [];
  const HEAVY = new Set(['box', 'point', 'stroke', 'undo', 'redo']);
  const R = window.rdevos = {
    busyLog: [], heavy: 0,
    z: {fit: true, s: 1, tx: 0, ty: 0, w: 0, h: 0},
    send(cmd) {
      queue.push(cmd);
      if (HEAVY.has(cmd.type)) { R.heavy++; R.showBusy(); }
      let b = document.querySelector('#cmd-go');
      if (b && b.tagName !== 'BUTTON') b = b.querySelector('button');
      if (b) b.click();
    },
    take() { const cmd = queue.shift(); if (!cmd) return ''; taken.push(cmd); return JSON.stringify(cmd); },
    done() {
      const cmd = taken.shift();
      if (cmd && HEAVY.has(cmd.type)) { R.heavy = Math.max(0, R.heavy - 1); R.showBusy(); }
    },
    showBusy() {
      const on = R.heavy > 0, el = document.querySelector('#canvas');
      if (el) el.classList.toggle('rd-busy', on);
      if (R.busyLog[R.busyLog.length - 1] !== on) R.busyLog.push(on);
    },
    tool() {
      const el = document.querySelector('#tool input:checked');
      const text = el ? ((el.closest('label') || {}).textContent || el.value || '') : '';
      return /eraser/i.test(text) ? 'erase' : /brush/i.test(text) ? 'brush' : /pan/i.test(text) ? 'pan' : 'prompt';
    },
    setTool(re) {
      const inp = [...document.querySelectorAll('#tool input[type=radio]')].find(
        x => re.test(((x.closest('label') || {}).textContent || x.value || '')));
      if (inp && !inp.checked) inp.click();
      const a = document.activeElement;
      if (a && a.closest && a.closest('#tool')) a.blur();  // keys go on working as shortcuts
      R.cursorStyle();
    },
    radius() {
      const el = document.querySelector('#brush-size input[type=number]');
      return Math.max(1, parseFloat(el ? el.value : '8') || 8);
    },
    view() { return document.querySelector('#canvas .rd-view'); },
    img() { return document.querySelector('#canvas .rd-img'); },
    apply() {
      const v = R.view(), im = R.img();
      if (!v || !im) return;
      const w = +v.dataset.w, h = +v.dataset.h, vw = v.clientWidth, vh = v.clientHeight;
      if (!w || !h || !vw || !vh) return;
      if (w !== R.z.w || h !== R.z.h) Object.assign(R.z, {fit: true, w, h});
      if (R.z.fit) {
        const s = Math.min(vw / w, vh / h);
        Object.assign(R.z, {s, tx: (vw - w * s) / 2, ty: (vh - h * s) / 2});
      }
      im.style.width = w + 'px'; im.style.height = h + 'px';
      im.style.transform = `translate(${R.z.tx}px, ${R.z.ty}px) scale(${R.z.s})`;
      im.style.imageRendering = R.z.s >= 3 ? 'pixelated' : 'auto';
      R.lastTransform = im.style.transform;
      const lvl = document.querySelector('#rd-zoom-level');
      if (lvl) lvl.textContent = (R.z.fit ? 'fit · ' : '') + Math.round(R.z.s * 100) + '%';
      R.showBusy();
      R.cursorStyle();
    },
    zoomAt(k, cx, cy) {
      const v = R.view();
      if (!v || !R.z.w) return;
      if (cx === undefined) { cx = v.clientWidth / 2; cy = v.clientHeight / 2; }
      const fit = Math.min(v.clientWidth / R.z.w, v.clientHeight / R.z.h);
      const s = Math.min(Math.max(R.z.s * k, fit * 0.5), 32);
      R.z.tx = cx - (cx - R.z.tx) * s / R.z.s; R.z.ty = cy - (cy - R.z.ty) * s / R.z.s;
      R.z.s = s; R.z.fit = false;
      R.apply();
    },
    fit() { R.z.fit = true; R.apply(); },
    pan(dx, dy) { R.z.tx += dx; R.z.ty += dy; R.z.fit = false; R.apply(); },
    cursorStyle() {
      const c = document.querySelector('#canvas');
      if (c) c.classList.toggle('rd-pan', R.tool() === 'pan');
    },
  };
  const band = document.createElement('div'); band.id = 'rd-band'; document.body.appendChild(band);
  const ink = document.createElement('canvas'); ink.id = 'rd-ink'; document.body.appendChild(ink);
  const brush = document.createElement('div'); brush.id = 'rd-cursor'; document.body.appendChild(brush);
  const resized = new ResizeObserver(() => R.apply());
  // Gradio patches the canvas in place (the same <img>, a new src and no style): apply the zoom again on any
  // change of the image, its size or its style.
  new MutationObserver(() => {
    const im = R.img();
    if (R.view() !== R.lastView) {
      if (R.lastView) resized.unobserve(R.lastView);
      R.lastView = R.view();
      if (R.lastView) resized.observe(R.lastView);
    }
    if (!im) return;
    if (im !== R.lastImg) { R.lastImg = im; im.addEventListener('load', () => R.apply()); }
    if (im.style.transform !== R.lastTransform || +R.view().dataset.w !== R.z.w || +R.view().dataset.h !== R.z.h)
      R.apply();
  }).observe(document.body, {childList: true, subtree: true, attributes: true,
                             attributeFilter: ['src', 'style', 'data-w', 'data-h']});
  // Screen position -> frame pixel (the image's box on screen is the frame, scaled).
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
  function showCursor(e) {
    const t = R.tool(), img = R.img(), v = R.view();
    const over = v && e.target.closest && e.target.closest('#canvas .rd-view');
    if (!over || !img || (t !== 'brush' && t !== 'erase')) { brush.style.display = 'none'; return; }
    const g = geom(img);
    if (!g) return;
    const d = 2 * R.radius() * g.s;
    Object.assign(brush.style, {display: 'block', left: e.clientX + 'px', top: e.clientY + 'px',
                                width: d + 'px', height: d + 'px'});
    brush.style.borderColor = t === 'erase' ? '#ff8080' : '#fff';
  }
  let drag = null;
  const on = (e, sel) => e.target.closest && e.target.closest(sel);
  document.addEventListener('contextmenu', e => { if (on(e, '#canvas .rd-view')) e.preventDefault(); });
  document.addEventListener('dragstart', e => { if (on(e, '#canvas')) e.preventDefault(); });
  document.addEventListener('wheel', e => {
    const v = on(e, '#canvas .rd-view');
    if (!v) return;
    e.preventDefault();
    const r = v.getBoundingClientRect();
    R.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});
  document.addEventListener('mousedown', e => {
    const v = on(e, '#canvas .rd-view'), img = R.img();
    if (!v || !img) return;
    const g = geom(img);
    if (!g) return;
    e.preventDefault();
    const tool = (e.button === 1 || R.tool() === 'pan') ? 'pan' : R.tool();
    drag = {g, tool, x: e.clientX, y: e.clientY, px: e.clientX, py: e.clientY, button: e.button,
            shift: e.shiftKey, moved: false, pts: [toFrame(g, e)]};
    if (tool === 'brush' || tool === 'erase') {
      const vr = v.getBoundingClientRect();
      drag.vr = vr;
      ink.style.left = vr.left + 'px'; ink.style.top = vr.top + 'px';
      ink.width = Math.round(vr.width); ink.height = Math.round(vr.height);
      ink.style.display = 'block';
      const ctx = ink.getContext('2d');
      ctx.clearRect(0, 0, ink.width, ink.height);
      ctx.lineCap = ctx.lineJoin = 'round';
      ctx.lineWidth = 2 * R.radius() * g.s;
      ctx.strokeStyle = tool === 'erase' ? 'rgba(0,0,0,0.6)' : 'rgba(255,255,255,0.7)';
    }
  });
  document.addEventListener('mousemove', e => {
    showCursor(e);
    if (!drag) return;
    const d = drag, g = d.g;
    if (Math.abs(e.clientX - d.x) + Math.abs(e.clientY - d.y) > 4) d.moved = true;
    if (d.tool === 'pan') {
      R.pan(e.clientX - d.px, e.clientY - d.py);
      d.px = e.clientX; d.py = e.clientY;
    } else if (d.tool === 'prompt') {
      if (!d.moved) return;
      band.style.display = 'block';
      band.style.left = Math.min(d.x, e.clientX) + 'px'; band.style.top = Math.min(d.y, e.clientY) + 'px';
      band.style.width = Math.abs(e.clientX - d.x) + 'px'; band.style.height = Math.abs(e.clientY - d.y) + 'px';
    } else {
      const p = toFrame(g, e), q = d.pts[d.pts.length - 1];
      if (Math.hypot(p[0] - q[0], p[1] - q[1]) * g.s < 2) return;
      d.pts.push(p);
      const ctx = ink.getContext('2d'), ox = g.ox - d.vr.left, oy = g.oy - d.vr.top;
      ctx.beginPath(); ctx.moveTo(q[0] * g.s + ox, q[1] * g.s + oy); ctx.lineTo(p[0] * g.s + ox, p[1] * g.s + oy);
      ctx.stroke();
    }
  });
  document.addEventListener('mouseup', e => {
    if (!drag) return;
    const d = drag; drag = null;
    band.style.display = 'none';
    if (d.tool === 'pan') return;
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
    if (obj) { R.send({type: 'object', id: parseInt(obj.dataset.obj, 10)}); return; }
    const z = e.target.closest && e.target.closest('[data-zoom]');
    if (z) {
      const k = z.dataset.zoom;
      if (k === 'fit') R.fit(); else if (k === 'in') R.zoomAt(1.5); else if (k === 'out') R.zoomAt(1 / 1.5);
      else R.zoomAt(1 / R.z.s);
    }
  });
  document.addEventListener('change', e => {
    const inp = e.target;
    if (inp && inp.matches && inp.matches('#upload input[type=file]') && inp.files && inp.files.length) {
      R.send({type: 'upload', files: [...inp.files].map(f => ({name: f.name, size: f.size}))});
    }
    if (inp && inp.closest && inp.closest('#tool')) R.cursorStyle();
  }, true);
  const TEXT = ['text', 'number', 'search', 'email', 'url', 'password', 'tel', ''];
  document.addEventListener('keydown', e => {
    const t = e.target, tag = t && t.tagName, type = ((t && t.type) || '').toLowerCase();
    if (t && (t.isContentEditable || tag === 'TEXTAREA' || tag === 'SELECT' ||
              (tag === 'INPUT' && TEXT.includes(type)))) return;  // typing: the keys are the field's
    const k = e.key;
    if (tag === 'INPUT' && type === 'range' && /^(Arrow|Home|End|Page)/.test(k)) return;  // the slider's own keys
    if ((e.ctrlKey || e.metaKey) && !e.altKey && /^[zZyY]$/.test(k)) {
      R.send({type: (k === 'y' || k === 'Y' || e.shiftKey) ? 'redo' : 'undo'});
      e.preventDefault();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    let handled = true;
    if (k === 'ArrowRight' || k === '.') R.send({type: 'step', delta: e.shiftKey ? 10 : 1});
    else if (k === 'ArrowLeft' || k === ',') R.send({type: 'step', delta: e.shiftKey ? -10 : -1});
    else if (k === 'Home') R.send({type: 'frame', frame: 0});
    else if (k === 'End') R.send({type: 'frame', frame: 1e9});
    else if (k === ' ') {
      if (tag === 'BUTTON') t.blur();  // not also a click of the focused button
      const b = document.querySelector('#play'); if (b) b.click();
    }
    else if (k === 'b') R.setTool(/box/i);
    else if (k === 'd') R.setTool(/brush/i);
    else if (k === 'e') R.setTool(/eraser/i);
    else if (k === 'h') R.setTool(/pan/i);
    else if (k === '+' || k === '=') R.zoomAt(1.25);
    else if (k === '-' || k === '_') R.zoomAt(0.8);
    else if (k === '0') R.fit();
    else if (k === 'n') { const b = document.querySelector('#obj-add'); if (b) b.click(); }
    else if (k === 'Escape') R.send({type: 'reset'});
    else if (/^[1-9]$/.test(k)) R.send({type: 'object', index: parseInt(k, 10) - 1});
    else handled = false;
    if (handled) e.preventDefault();
  });
  R.apply();
}
""".replace("__CSS__", repr(_CSS.strip()).replace("\\n", " "))

#: The ``js`` of the ``#cmd-go`` event: its first input becomes the next queued command.
TAKE_COMMAND = "(cmd, ...rest) => [window.rdevos ? window.rdevos.take() : '', ...rest]"

#: Runs after each command's event (success or not): the busy indicator counts it as done.
COMMAND_DONE = "() => { if (window.rdevos) window.rdevos.done(); }"

#: The ``js`` of the page load: the job this browser had open (``?job=`` in the address, else local storage).
SAVED_JOB = ("(x) => [new URLSearchParams(window.location.search).get('job') || "
             "window.localStorage.getItem('rdevos-job') || '']")

#: Remembers the open job in this browser (survives reloads and server restarts).
REMEMBER_JOB = ("(j) => { try { if (j) { localStorage.setItem('rdevos-job', j); } else { "
                "localStorage.removeItem('rdevos-job'); } const u = new URL(window.location.href); "
                "if (j) u.searchParams.set('job', j); else u.searchParams.delete('job'); "
                "history.replaceState(null, '', u); } catch (err) {} return [j]; }")

#: Asks before deleting the selected object (its last input becomes the answer).
CONFIRM_OBJECT_DELETE = (
    "(v, o, x) => { const el = document.querySelector('#object-list .rd-obj.sel'); "
    "const name = el ? el.dataset.name : 'this object'; "
    "return [v, o, window.confirm('Delete ' + name + ' and its masks and results on every frame? "
    "This cannot be undone.')]; }")

#: Asks before deleting the open job.
CONFIRM_JOB_DELETE = (
    "(v, x) => { const el = document.querySelector('#job input'); const name = el && el.value ? "
    "el.value.split(' · ')[0] : 'this job'; return [v, window.confirm('Delete the job ' + name + ' and all its "
    "files (frames, masks, results, downloads)? This cannot be undone.')]; }")

#: Zoom buttons (handled by :data:`SETUP`'s click listener).
ZOOM_BAR = ('<div class="rd-zoom"><button type="button" data-zoom="out" title="Zoom out (-)">−</button>'
            '<button type="button" data-zoom="fit" title="Fit to the window (0)">Fit</button>'
            '<button type="button" data-zoom="1" title="Actual size">1:1</button>'
            '<button type="button" data-zoom="in" title="Zoom in (+ or the mouse wheel)">+</button>'
            '<span id="rd-zoom-level"></span></div>')
