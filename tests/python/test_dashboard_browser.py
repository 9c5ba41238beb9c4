"""The dashboard (issue 16) in a real browser: Debian's headless Chromium driven by Playwright's sync API.

Signs in with the admin key, a tenant key and a wrong key; visits every page linked from the navigation in
English and Russian, light and dark, for both principals, with no console error, page error or failed
request, and with axe-core (tests/node/node_modules/axe-core, pinned in tests/node/package-lock.json) finding
no `serious` or `critical` violation; saves a screenshot of each page as
target/dashboard-screenshots/<page>-<lang>-<theme>.png; creates a key (secret shown once, and it works) and
revokes it as a tenant; streams a playground answer from the mock; switches language and theme through the
settings form and the theme button.

Never downloads a browser: Playwright launches the system Chromium (`apt-get install chromium`, which
scripts/test does); without it, or without the `playwright` package or axe-core, the tests are skipped with
the reason. Every browser action has a timeout, and the module runs in well under two minutes.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from dataclasses import dataclass, field
from typing import Iterator

import httpx
import pytest

from conftest import REPO, Gateway, start_gateway, stop_gateway
from mock_upstream import Answer, MockUpstream, Reply

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
AXE = REPO / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "target" / "dashboard-screenshots"
ADMIN_KEY = "admin-key-browser-0123456789"
TENANT = "browser"
OTHER = "other-tenant"
TIMEOUT_MS = 10_000  # every browser action and navigation

if not pathlib.Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` (scripts/test does)",
                allow_module_level=True)


@dataclass
class Dash:
    gw: Gateway
    tenant_key: str
    other_key: str

    @property
    def url(self) -> str:
        return self.gw.url


def _admin(gw: Gateway, method: str, path: str, body: dict | None = None) -> httpx.Response:
    r = httpx.request(method, gw.url + path, json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"},
                      timeout=10)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
    return r


@pytest.fixture(scope="module")
def dash(mocks: dict[str, MockUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    """A gateway with an admin key, a pricing file and two stored tenants (keys managed in the dashboard),
    with some usage seeded through the tenants' keys so the pages show numbers."""
    tmp = tmp_path_factory.mktemp("dashboard-gateway")
    pricing = tmp / "pricing.yaml"
    # $2 / $8 per million tokens on every OpenAI model: the mock's 11 + 6 tokens cost $0.00007 a call.
    pricing.write_text('providers:\n  openai:\n    "*": { input: "2", output: "8" }\n')
    gw = start_gateway(mocks, tmp, f"admin_api_key: {ADMIN_KEY}\npricing_file: {pricing}\n")
    try:
        keys = {}
        for t, budget in ((TENANT, "5"), (OTHER, None)):
            _admin(gw, "POST", "/admin/tenants", {"id": t, **({"monthly_budget_usd": budget} if budget else {})})
            keys[t] = _admin(gw, "POST", f"/admin/tenants/{t}/keys", {"name": f"{t} seed key"}).json()["key"]
        for m in mocks.values():
            m.reset()
        calls = [(TENANT, "openai/gpt-4o-mini")] * 3 + [(TENANT, "openai/gpt-4o"), (OTHER, "openai/gpt-4o")]
        for t, model in calls:
            r = httpx.post(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {keys[t]}"},
                           json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10  # the ledger writer batches its inserts
        while _admin(gw, "GET", "/admin/usage").json()["data"][0]["requests"] != len(calls):
            assert time.monotonic() < deadline, "the seeded usage never reached the ledger"
            time.sleep(0.05)
        yield Dash(gw, keys[TENANT], keys[OTHER])
    finally:
        stop_gateway(gw)


@pytest.fixture(scope="module")
def chromium() -> Iterator["sync_api.Browser"]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()


@dataclass
class Problems:
    """Console errors, uncaught page errors, failed requests and HTTP errors seen by one context."""
    items: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def watch(self, page: "sync_api.Page") -> None:
        def console(msg: "sync_api.ConsoleMessage") -> None:
            if msg.type == "error":
                # Chromium logs a non-2xx document as a console error; those are judged by status below.
                if "Failed to load resource" in msg.text and self.allowed_statuses:
                    return
                self.items.append(f"console error on {page.url}: {msg.text}")

        def response(resp: "sync_api.Response") -> None:
            if resp.status >= 400 and resp.status not in self.allowed_statuses:
                self.items.append(f"HTTP {resp.status} for {resp.request.method} {resp.url}")

        page.on("console", console)
        page.on("pageerror", lambda e: self.items.append(f"page error on {page.url}: {e}"))
        def failed(req: "sync_api.Request") -> None:
            # ERR_ABORTED is a request cut short by the next navigation (the page icon, when a test moves
            # on at once); a refused, reset or CSP-blocked request has another code.
            if req.failure != "net::ERR_ABORTED":
                self.items.append(f"request failed: {req.method} {req.url}: {req.failure}")

        page.on("requestfailed", failed)
        page.on("response", response)


@pytest.fixture
def session(chromium: "sync_api.Browser", dash: Dash) -> Iterator["Session"]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, base_url=dash.url)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    problems = Problems()
    page = context.new_page()
    problems.watch(page)
    s = Session(context, page, problems, dash)
    yield s
    context.close()
    assert not problems.items, "\n".join(problems.items)


@dataclass
class Session:
    context: "sync_api.BrowserContext"
    page: "sync_api.Page"
    problems: Problems
    dash: Dash

    def prefer(self, lang: str, theme: str) -> None:
        """The dashboard's own preference cookies (what the settings form sets). The browser's own locale
        (date inputs, `Accept-Language`) is the context's: English, as a Russian page must not need it."""
        self.context.add_cookies([{"name": n, "value": v, "domain": "127.0.0.1", "path": "/dashboard",
                                   "sameSite": "Strict"} for n, v in (("agg_lang", lang), ("agg_theme", theme))])

    def sign_in(self, credential: str) -> None:
        p = self.page
        assert p.goto("/dashboard/login").status == 200
        p.fill("#credential", credential)
        with p.expect_navigation():
            p.click("main form button[type=submit]")
        assert p.url == self.dash.url + "/dashboard", p.url

    def goto(self, path: str) -> None:
        resp = self.page.goto(path)
        assert resp is not None and resp.status == 200, f"{path}: {resp and resp.status}"
        self.page.wait_for_load_state("load")

    def axe(self) -> list[dict]:
        """axe-core's `serious` and `critical` violations on the current page. The script is evaluated
        through the DevTools protocol, which the page's CSP (script-src 'self') does not govern, so the
        dashboard's own CSP stays in force for everything else."""
        p = self.page
        if not AXE.exists():
            pytest.skip(f"axe-core is not installed at {AXE}: run `npm ci` in tests/node (scripts/test does)")
        if not p.evaluate("() => typeof window.axe === 'object'"):
            p.evaluate(AXE.read_text(encoding="utf-8") + "\n;void 0")
        result = p.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
        }""")
        for v in result:
            if v["impact"] not in ("serious", "critical"):  # reported (pytest -s), not failed
                print(f"axe {v['impact']}: {v['id']} on {p.url}: {v['help']}")
        return [v for v in result if v["impact"] in ("serious", "critical")]

    def shoot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, timeout=TIMEOUT_MS)


def page_name(href: str) -> str:
    return "overview" if href.rstrip("/") == "/dashboard" else href.rstrip("/").rsplit("/", 1)[-1]


NAV_EN = {"admin": ["Overview", "Usage", "Requests", "Tenants and keys", "Models and prices", "Jobs and batches",
                    "Playground", "Settings"],
          "tenant": ["Overview", "Usage", "Requests", "Keys", "Models and prices", "Jobs and batches", "Playground",
                     "Settings"]}
NAV_RU = {"admin": ["Обзор", "Использование", "Запросы", "Арендаторы и ключи", "Модели и цены", "Задания и пакеты",
                    "Песочница", "Настройки"],
          "tenant": ["Обзор", "Использование", "Запросы", "Ключи", "Модели и цены", "Задания и пакеты", "Песочница",
                     "Настройки"]}


def visit_and_check(s: Session, name: str, lang: str, theme: str, found: dict[str, list[dict]]) -> None:
    p = s.page
    assert p.get_attribute("html", "lang") == lang, f"{name}: lang"
    assert p.get_attribute("html", "data-theme") == theme, f"{name}: theme"
    assert p.locator("h1").first.is_visible(), f"{name}: no heading"
    violations = s.axe()
    if violations:
        found[f"{name}-{lang}-{theme}"] = violations
    s.shoot(f"{name}-{lang}-{theme}")


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("lang", ["en", "ru"])
@pytest.mark.parametrize("who", ["admin", "tenant"])
def test_every_page_in_both_languages_and_themes(session: Session, who: str, lang: str, theme: str) -> None:
    s, p = session, session.page
    s.prefer(lang, theme)
    prefix = "" if who == "admin" else "tenant-"
    found: dict[str, list[dict]] = {}
    # The sign-in page too (before signing in: it is what a new user sees first).
    s.goto("/dashboard/login")
    if who == "admin":
        visit_and_check(s, "login", lang, theme, found)
    s.sign_in(ADMIN_KEY if who == "admin" else s.dash.tenant_key)
    nav = p.locator("header nav a")
    labels = [t.strip() for t in nav.all_inner_texts()]
    assert labels == (NAV_EN if lang == "en" else NAV_RU)[who], labels
    hrefs = [nav.nth(i).get_attribute("href") for i in range(nav.count())]
    if who == "admin":
        hrefs.append(f"/dashboard/tenants/{TENANT}")
    for href in hrefs:
        s.goto(href)
        name = prefix + ("tenant-detail" if href.endswith(f"/tenants/{TENANT}") else page_name(href))
        if href in [nav.nth(i).get_attribute("href") for i in range(nav.count())]:
            current = p.locator('header nav a[aria-current="page"]')
            assert current.count() == 1 and current.get_attribute("href") == href, f"{href}: aria-current"
        visit_and_check(s, name, lang, theme, found)
        html = p.content()
        if who == "tenant":
            assert OTHER not in html, f"{href}: the tenant sees another tenant"
    # The numbers: the seeded calls are on the overview (4 for the tenant, 5 for the admin).
    s.goto("/dashboard")
    requests = p.locator("#kpi-requests .kpi-value").inner_text()
    want = "4" if who == "tenant" else "5"
    assert requests.startswith(want), requests
    assert ("requests" if lang == "en" else "запрос") in requests, requests
    assert not found, "axe-core serious/critical violations:\n" + json.dumps(found, ensure_ascii=False, indent=1)


def test_sign_in_wrong_key_shows_an_error_then_the_right_key_works(session: Session) -> None:
    s, p = session, session.page
    s.problems.allowed_statuses.add(401)  # the refused sign-in answers 401 (with the page)
    s.prefer("en", "light")
    s.goto("/dashboard/login")
    p.fill("#credential", "sk-not-a-key")
    with p.expect_navigation():
        p.click("main form button[type=submit]")
    alert = p.locator('[role="alert"]')
    assert alert.is_visible()
    assert "not valid" in alert.inner_text(), alert.inner_text()
    assert p.locator("#credential").is_visible(), "the form is still there"
    s.shoot("login-error-en-light")
    assert not s.axe()
    s.problems.allowed_statuses.clear()
    s.sign_in(s.dash.tenant_key)
    assert TENANT in p.locator(".who").inner_text()
    # Signing out ends the session: the dashboard sends us back to the sign-in page.
    with p.expect_navigation():
        p.click(".who form button[type=submit]")
    assert p.url.endswith("/dashboard/login"), p.url
    s.goto("/dashboard/keys")
    assert p.url.endswith("/dashboard/login"), p.url


def test_tenant_creates_a_key_shown_once_and_revokes_it(session: Session) -> None:
    s, p = session, session.page
    s.prefer("en", "light")
    s.sign_in(s.dash.tenant_key)
    s.goto("/dashboard/keys")
    p.fill('input[name="name"]', "made-in-browser")
    with p.expect_navigation():
        p.get_by_role("button", name="Create key").click()
    secret = p.locator("#new-key").inner_text().strip()
    assert secret.startswith("sk-"), secret
    assert p.get_by_role("button", name="Copy").is_visible()
    assert not s.axe()
    s.shoot("tenant-key-created-en-light")
    # The secret works at the API, and it is never shown again.
    assert httpx.get(s.dash.url + "/v1/models", headers={"authorization": f"Bearer {secret}"},
                     timeout=10).status_code == 200
    s.goto("/dashboard/keys")
    assert secret not in p.content()
    row = p.locator("tr", has_text="made-in-browser")
    assert "Active" in row.inner_text()
    with p.expect_navigation():
        row.get_by_role("button", name="Revoke made-in-browser").click()
    assert p.url.endswith("/dashboard/keys"), p.url
    assert "Revoked" in p.locator("tr", has_text="made-in-browser").inner_text()
    assert "Active" in p.locator("tr", has_text=f"{TENANT} seed key").inner_text(), "only that key is revoked"
    assert httpx.get(s.dash.url + "/v1/models", headers={"authorization": f"Bearer {secret}"},
                     timeout=10).status_code == 401


def test_playground_streams_an_answer(session: Session, mocks: dict[str, MockUpstream]) -> None:
    s, p = session, session.page
    s.prefer("ru", "dark")
    s.sign_in(s.dash.tenant_key)
    s.goto("/dashboard/playground")
    options = p.locator("#pg-model option").all_inner_texts()
    assert "openai/gpt-4o-mini" in options, options
    p.select_option("#pg-model", "openai/gpt-4o-mini")
    p.fill("#pg-prompt", "Say hello")
    mocks["openai"].reset()
    mocks["openai"].enqueue(Reply(answer=Answer(text=["Привет", " из ", "потока", "!"], input_tokens=12,
                                               output_tokens=5)))
    with p.expect_response("**/dashboard/playground/chat") as info:
        p.click("#playground button[type=submit]")
    resp = info.value
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
    answer = p.locator("#pg-answer")
    sync_api.expect(answer).to_have_text("Привет из потока!", timeout=TIMEOUT_MS)
    sync_api.expect(p.locator("#pg-completion-tokens")).to_have_text("5", timeout=TIMEOUT_MS)
    assert p.locator("#pg-prompt-tokens").inner_text() == "12"
    # 12 × $2 + 5 × $8 per million = $0.000064, in Russian money format.
    cost = p.locator("#pg-cost").inner_text()
    assert cost.replace("\u00a0", " ") == "0,000064 $", repr(cost)
    sent = mocks["openai"].chat_requests()
    assert len(sent) == 1 and sent[0].json["stream"] is True and sent[0].json["messages"][-1]["content"] == "Say hello"
    assert not s.axe()
    s.shoot("tenant-playground-answer-ru-dark")


def test_admin_playground_explains_it_needs_a_tenant(session: Session) -> None:
    s, p = session, session.page
    s.prefer("en", "light")
    s.sign_in(ADMIN_KEY)
    s.goto("/dashboard/playground")
    assert p.locator('[role="status"]').is_visible()
    assert p.locator("#playground").count() == 0


def test_settings_form_and_theme_button(session: Session) -> None:
    s, p = session, session.page
    s.prefer("en", "light")
    s.sign_in(ADMIN_KEY)
    s.goto("/dashboard/settings")
    p.select_option("#lang", "ru")
    p.select_option("#theme", "dark")
    p.select_option("#tz", "180")
    with p.expect_navigation():
        p.click("main form button[type=submit]")
    assert p.get_attribute("html", "lang") == "ru"
    assert p.get_attribute("html", "data-theme") == "dark"
    assert p.locator('[role="status"]').inner_text() == "Сохранено."
    s.goto("/dashboard")
    assert "UTC+03:00" in p.locator(".zone").inner_text()
    # The theme button (shown only with JavaScript) cycles system → light → dark and remembers it.
    toggle = p.locator("#theme-toggle")
    assert toggle.is_visible()
    toggle.click()
    assert p.get_attribute("html", "data-theme") == "system"
    toggle.click()
    assert p.get_attribute("html", "data-theme") == "light"
    cookies = {c["name"]: c["value"] for c in s.context.cookies()}
    assert cookies.get("agg_theme") == "light", cookies
    s.goto("/dashboard/usage")
    assert p.get_attribute("html", "data-theme") == "light"
    assert p.get_attribute("html", "lang") == "ru"


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("lang", ["en", "ru"])
def test_tenant_uploads_a_one_line_batch_and_sees_it_complete(session: Session, lang: str, theme: str) -> None:
    """Jobs and batches (issue 16): paste a one-line batch JSONL into the Jobs page's form, follow it to its
    page until it completes (the mock answers), download its output; axe-core and a screenshot of the list
    and of the finished job."""
    s, p = session, session.page
    s.prefer(lang, theme)
    s.sign_in(s.dash.tenant_key)
    s.goto("/dashboard/jobs")
    line = json.dumps({"custom_id": f"browser-{lang}-{theme}", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})
    p.fill('textarea[name="jsonl"]', line)
    with p.expect_navigation():
        p.locator('form[action="/dashboard/jobs"] button[type=submit]').click()
    assert "/dashboard/jobs/batch_" in p.url, p.url
    job_url = p.url
    done = {"en": "completed", "ru": "выполнено"}[lang]
    deadline = time.monotonic() + 20
    while p.locator("#job-status").inner_text() != done:
        assert time.monotonic() < deadline, f"the batch never completed: {p.locator('#job-status').inner_text()}"
        time.sleep(0.2)
        s.goto(job_url)
    assert p.locator("#job-total").inner_text() == "1"
    assert p.locator("#job-completed").inner_text() == "1"
    assert p.locator("#job-failed").inner_text() == "0"
    assert p.get_attribute("html", "lang") == lang and p.get_attribute("html", "data-theme") == theme
    violations = s.axe()
    assert not violations, json.dumps(violations, ensure_ascii=False, indent=1)
    s.shoot(f"tenant-job-done-{lang}-{theme}")
    href = p.locator("a.button[download]").first.get_attribute("href")
    body = s.context.request.get(href).text()
    out = json.loads(body.splitlines()[0])
    assert out["custom_id"] == f"browser-{lang}-{theme}" and out["response"]["status_code"] == 200, out
    s.goto("/dashboard/jobs")
    assert p.locator("tr", has_text=job_url.rsplit("/", 1)[-1]).count() == 1
    assert not s.axe()
    s.shoot(f"tenant-jobs-list-{lang}-{theme}")
