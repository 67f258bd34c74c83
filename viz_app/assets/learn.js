// the Learn tab: Shift + arrow keys move the lesson's query patch (when no text field has the focus);
// presenter mode, its "Image & model" drawer, and step 2's part shown (client side, instant)
() => {
  window.vizPresenter = (on) => {
    document.body.classList.toggle('presenter', on);
    if (!on) document.body.classList.remove('inputs-open');
  };
  window.vizToggleInputs = () => document.body.classList.toggle('inputs-open');
  window.vizShowPart = (v) => {
    const p = document.querySelector('#learn-query-pane');
    if (p) p.dataset.show = String(v);
  };
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') document.body.classList.remove('inputs-open');
    if (!e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const ids = {ArrowUp: 'learn-up', ArrowDown: 'learn-down', ArrowLeft: 'learn-left', ArrowRight: 'learn-right'};
    const id = ids[e.key];
    if (!id) return;
    const b = document.querySelector('#' + id);
    if (b) { e.preventDefault(); b.click(); }
  });
}
