"""The few lines of JavaScript that make one slider per sweep parameter work.

Plotly's sliders are independent: a step cannot know where the other sliders stand, so a
slider per parameter cannot pick a frame by itself. Every step of these sliders uses
``method="skip"`` (plotly only moves the slider and fires ``plotly_sliderchange``); this script
listens to that event, reads the position of every slider, builds the frame name
(``"i-j-k..."``, one index per swept parameter, in ``layout.meta.pcad_sweep.names`` order) and
calls ``Plotly.animate`` on that frame. It is inlined in the HTML (no network), and plotly
substitutes ``{plot_id}`` with the figure's div id.
"""

SWEEP_SCRIPT = """
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.layout || !gd.layout.meta || !gd.layout.meta.pcad_sweep) { return; }
  var meta = gd.layout.meta.pcad_sweep;
  function currentKey() {
    var sliders = gd.layout.sliders || [];
    var idx = [];
    for (var i = 0; i < meta.names.length; i++) {
      var s = meta.slider_of[i];
      idx.push(s < 0 ? 0 : (sliders[s] && sliders[s].active) || 0);
    }
    return idx.join('-');
  }
  gd.pcadSweepKey = currentKey;
  gd.on('plotly_sliderchange', function () {
    var key = currentKey();
    if (key === gd.pcadSweepShown) { return; }
    gd.pcadSweepShown = key;
    Plotly.animate(gd, [key], {mode: 'immediate', frame: {duration: 0, redraw: true},
                               transition: {duration: 0}});
  });
  gd.pcadSweepShown = currentKey();
})();
"""
