//! The web console at `/ui` on the admin listener (docs/serve.md, "The web console"): one page,
//! its script and its style sheet, all built in. They hold no data (no app, no log line, no
//! token), so they are served without the token; the page takes the token from its URL's
//! fragment, which no request carries, and calls the admin API with it like any client: every
//! data endpoint still refuses a request without it.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What the page may load and do: its own script and style sheet, fetches to this listener,
/// nothing inline, no plugin, no form sent anywhere, and no page may frame it.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// One file of the console: where it is served, its type, its text.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: [Asset; 3] = [
    Asset {
        path: "/ui",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../console/index.html"),
    },
    Asset {
        path: "/ui/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../console/console.js"),
    },
    Asset {
        path: "/ui/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../console/console.css"),
    },
];

/// The console's routes (GET and HEAD), with no token check: merged into the admin listener's
/// router outside its token layer, inside its Host check.
pub fn router() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { respond(asset) }))
    })
}

fn respond(asset: &Asset) -> Response {
    (
        [
            (CONTENT_TYPE, asset.content_type),
            (CONTENT_SECURITY_POLICY, POLICY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            // A new serve may bring a new console: the browser asks again each time.
            (CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(path: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.path == path).unwrap()
    }

    #[test]
    fn every_file_is_locked_down() {
        for asset in &ASSETS {
            let response = respond(asset);
            let header = |name| response.headers()[name].to_str().unwrap();
            assert_eq!(header(CONTENT_TYPE), asset.content_type);
            assert_eq!(header(X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(X_FRAME_OPTIONS), "DENY");
            let policy = header(CONTENT_SECURITY_POLICY);
            for directive in [
                "default-src 'none'",
                "script-src 'self'",
                "frame-ancestors 'none'",
            ] {
                assert!(policy.contains(directive), "{directive} in {policy}");
            }
            assert!(!policy.contains("unsafe"), "{policy}");
        }
    }

    /// The policy forbids inline script and style: the page has neither.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = asset("/ui").body;
        assert!(page.contains(r#"<script src="/ui/console.js" defer></script>"#));
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        for inline in ["<style", " style="] {
            assert!(!page.contains(inline), "{inline} in {page}");
        }
        let handler = page
            .split_whitespace()
            .find(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handler, None, "an event handler attribute");
    }

    /// Log lines and names come from hostile guests: the script only ever sets text, never
    /// markup, and runs no string as code.
    #[test]
    fn the_script_never_parses_data_as_markup_or_code() {
        let script = asset("/ui/console.js").body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "Function(",
            "setTimeout('",
        ] {
            assert!(!script.contains(sink), "{sink} in console.js");
        }
    }
}
