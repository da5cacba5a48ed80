/* rcnn_lab book: let the ipywidgets HTML manager typeset with MathJax 3.
 *
 * @jupyter-widgets/html-manager (embed-amd.js) typesets widget labels with MathJax 2's
 * MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]) whenever window.MathJax exists; the book
 * loads MathJax 3, which has no Hub, so every label threw "reading 'Queue'". MathJax 3's own
 * equivalent is MathJax.typesetPromise([element]). This file is loaded deferred, after MathJax's
 * deferred script, so window.MathJax is MathJax 3 when it runs (pages without maths have none).
 */
(function () {
  "use strict";
  var mathjax = window.MathJax;
  if (!mathjax || !mathjax.version || mathjax.Hub) {
    return;
  }
  mathjax.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) && job[0] === "Typeset" ? job[2] : undefined;
      return mathjax.startup.promise.then(function () {
        return mathjax.typesetPromise(element ? [element] : undefined);
      });
    },
  };
})();
