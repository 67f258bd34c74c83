() => {
  // Gradio's own widget words ("Click to Access Webcam", the footer) follow the browser's language, and a
  // few are not translated at all: in a page whose language the switch set, say them in that language too.
  // The table (English text -> text per language) comes from the catalogue: window.vizGradioWords.
  const table = window.vizGradioWords || {};
  const original = new WeakMap();
  const rewrite = () => {
    const lang = document.documentElement.lang || 'en';
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const node = walker.currentNode;
      const english = original.has(node) ? original.get(node) : node.nodeValue.trim();
      const words = table[english];
      if (!words) continue;
      const said = words[lang] || english;
      if (node.nodeValue.trim() !== said) {
        original.set(node, english);
        node.nodeValue = node.nodeValue.replace(node.nodeValue.trim(), said);
      }
    }
  };
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; rewrite(); });
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true,
                             attributeFilter: ['lang']});
  new MutationObserver(rewrite).observe(document.documentElement, {attributes: true, attributeFilter: ['lang']});
  rewrite();
}
