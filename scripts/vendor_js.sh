#!/usr/bin/env bash
# Vendor the book's JavaScript from npm so that maths and widgets render with NO network.
#
#   MathJax 3 (maths), RequireJS + @jupyter-widgets/html-manager (widget views).
#
# They land in _vendor/ (git-ignored, third-party code is never committed), which _config.yml
# serves through html_static_path. Not _static/: Jupyter Book injects every .js under _static/
# into every page.
set -euo pipefail
cd "$(dirname "$0")/.."

MATHJAX=mathjax@3.2.2
REQUIREJS=requirejs@2.3.8
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15

if ! command -v npm >/dev/null 2>&1; then
  echo "vendor_js.sh: npm is needed to vendor MathJax and the widget manager (apt-get install npm)" >&2
  exit 1
fi

npm install --no-audit --no-fund --loglevel=error --prefix .npm-vendor \
  "$MATHJAX" "$REQUIREJS" "$HTML_MANAGER" >/dev/null

rm -rf _vendor
mkdir -p _vendor
cp -r .npm-vendor/node_modules/mathjax/es5 _vendor/mathjax
cp .npm-vendor/node_modules/requirejs/require.js _vendor/require.js
cp .npm-vendor/node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js _vendor/embed-amd.js
# The widget manager's icon fonts: its CSS asks for them relative to the PAGE, at
# @jupyter-widgets/html-manager/dist/<hash>.woff2, and every chapter page lives in book/.
# html_extra_path (_vendor_extra) copies this tree into the built site as it is.
fonts=_vendor_extra/book/@jupyter-widgets/html-manager/dist
rm -rf _vendor_extra
mkdir -p "$fonts"
find .npm-vendor/node_modules/@jupyter-widgets/html-manager/dist -maxdepth 1 \
  \( -name '*.woff2' -o -name '*.woff' -o -name '*.ttf' -o -name '*.eot' -o -name '*.svg' \) \
  -exec cp {} "$fonts"/ \;
for f in _vendor/mathjax/tex-chtml.js _vendor/require.js _vendor/embed-amd.js; do
  [ -s "$f" ] || { echo "vendor_js.sh: $f is missing after npm install" >&2; exit 1; }
done
echo "vendored MathJax, RequireJS and the widget manager into _vendor/"
