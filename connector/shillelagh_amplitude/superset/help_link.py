"""The "Connect a database" form, in Amplitude's terms: its help link leads to the connection help that Superset
itself serves (:mod:`.help_page`), its fields show what goes in them, and one "Connect" click connects.

Superset 6.1 builds the link under "Enter the required … credentials" into its frontend as
``https://superset.apache.org/docs/databases/<engine>`` (its per-engine overrides come from
``superset_text.yml`` at build time only), and its fields' placeholders are fixed ("e.g. Analytics"). Its form
validates on a field's blur, and "Connect" is enabled only after a validation: a field just typed in keeps it
disabled until the cursor leaves, and a click made with the cursor in a field is lost (leaving the field starts
validation, which disables the button between mousedown and mouseup). Its runtime extension point is the
template ``tail_js_custom_extra.html``, included at the end of every page. :func:`register` prepends to that
template a script (carrying Talisman's CSP nonce) that retargets links to Amplitude's missing page at
:data:`.help_page.LINK` and, in a form for Amplitude Export API, sets our placeholders (and the URI form's),
validates a field once typing in it pauses with "Connect" disabled, and keeps the focus where it is when a footer
button is pressed; whatever the deployment's own template holds is kept after it.
"""

from __future__ import annotations

import json
from string import Template
from typing import Any

from jinja2 import ChoiceLoader, DictLoader, Environment, TemplateNotFound

from . import help_page
from .engine_spec import AmplitudeEngineSpec

TEMPLATE = "tail_js_custom_extra.html"
#: Where Superset's frontend sends "Need help? Learn more about connecting to …" for this engine.
SUPERSET_DOCS_LINK = f"https://superset.apache.org/docs/databases/{AmplitudeEngineSpec.engine}"

#: The form's inputs (by name) and what they hold, for a connection to Amplitude.
PLACEHOLDERS = {
    "username": "the Amplitude project's API key",
    "password": "the Amplitude project's secret key",
    "query_input": "region=eu for an EU project (empty for US)",
    "database_name": "e.g. Amplitude (production)",
    "sqlalchemy_uri": AmplitudeEngineSpec.sqlalchemy_uri_placeholder,
}

#: How long typing in the form pauses before the field being typed in is validated (if "Connect" is disabled); how
#: long "Connect" may stay disabled after that before the field is validated again.
VALIDATE_AFTER_MS = 300
REVALIDATE_AFTER_MS = 2000

SCRIPT = Template("""{% import 'superset/macros.html' as amplitude_macros %}
<script nonce="{{ amplitude_macros.get_nonce() }}">
  (function () {
    var selector = 'a[href=' + JSON.stringify($docs_link) + ']';
    var placeholders = $placeholders;
    function amplitudeModal(node) {
      var modal = node && node.closest ? node.closest('.ant-modal') : null;
      return modal && modal.textContent.indexOf($engine_name) !== -1 ? modal : null;
    }
    // Pressing a footer button ("Connect") must not take the focus: leaving a field starts the form's validation,
    // which disables "Connect" between mousedown and mouseup, and the click is lost.
    document.addEventListener('mousedown', function (event) {
      var button = event.target.closest && event.target.closest('.ant-modal-footer button');
      if (button && amplitudeModal(button)) { event.preventDefault(); }
    }, true);
    // The form validates a field on its blur and enables "Connect" after a validation; the answers of two
    // validations can arrive in either order, so an earlier one (a field still empty then) can leave "Connect"
    // disabled with the cursor in a field. When typing pauses with "Connect" disabled, the field reports a blur
    // with the cursor kept in it, and again while "Connect" stays disabled (a few times). An enabled "Connect" is
    // left alone: a validation would disable it for a moment, under the user's click.
    var pause = null;
    function validate(field, delay, retries) {
      clearTimeout(pause);
      pause = setTimeout(function () {
        var modal = amplitudeModal(field);
        if (!modal || document.activeElement !== field) { return; }
        var buttons = modal.querySelectorAll('.ant-modal-footer button');
        if (!buttons.length || !buttons[buttons.length - 1].disabled) { return; }
        field.dispatchEvent(new FocusEvent('focusout', {bubbles: true}));
        if (retries > 0) { validate(field, $revalidate_after_ms, retries - 1); }
      }, delay);
    }
    document.addEventListener('input', function (event) {
      if (event.target.name && amplitudeModal(event.target)) { validate(event.target, $validate_after_ms, 3); }
    }, true);
    function update() {
      document.querySelectorAll(selector).forEach(function (link) { link.href = $help_url; });
      document.querySelectorAll('.ant-modal').forEach(function (modal) {
        if (!amplitudeModal(modal)) { return; }
        Object.keys(placeholders).forEach(function (name) {
          modal.querySelectorAll('[name="' + name + '"]').forEach(function (input) {
            if (input.placeholder !== placeholders[name]) { input.placeholder = placeholders[name]; }
          });
        });
      });
    }
    new MutationObserver(update).observe(document.documentElement, {
      subtree: true, childList: true, attributes: true, attributeFilter: ['href', 'placeholder'],
    });
    update();
  })();
</script>
""").substitute(docs_link=json.dumps(SUPERSET_DOCS_LINK), help_url=json.dumps(help_page.LINK),
                placeholders=json.dumps(PLACEHOLDERS), engine_name=json.dumps(AmplitudeEngineSpec.engine_name),
                validate_after_ms=VALIDATE_AFTER_MS, revalidate_after_ms=REVALIDATE_AFTER_MS)


def _existing_source(env: Environment) -> str:
    """The deployment's ``tail_js_custom_extra.html`` (Superset ships one with comments only)."""
    try:
        return env.loader.get_source(env, TEMPLATE)[0] if env.loader else ""
    except TemplateNotFound:
        return ""


def register(app: Any) -> None:
    """``FLASK_APP_MUTATOR``: serve the help page, and the script before the deployment's own tail template."""
    help_page.register(app)
    env = app.jinja_env
    source = SCRIPT + _existing_source(env)
    env.loader = ChoiceLoader([DictLoader({TEMPLATE: source}), env.loader])
