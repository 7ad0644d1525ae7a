//! The routes against a fake handler: each action reaches the typed API with what the form
//! said, names from elsewhere are escaped, and no request (also random ones) panics.

use std::sync::Mutex;

use proptest::prelude::*;

use super::fake::Fake;
use super::http::{parse_head, Request, Response};
use super::routes::Site;
use super::samples::Samples;

fn site() -> Site<Fake> {
    Site {
        handler: Fake::default(),
        samples: Mutex::new(Samples::default()),
    }
}

fn req(method: &str, target: &str, body: &str) -> Request {
    let mut r = parse_head(format!("{method} {target} HTTP/1.1").as_bytes()).unwrap();
    r.body = body.as_bytes().to_vec();
    r
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn location(r: &Response) -> &str {
    &r.headers.iter().find(|(n, _)| n == "Location").unwrap().1
}

#[test]
fn pages_render_and_escape() {
    let s = site();
    let r = s.route(&req("GET", "/", ""));
    assert_eq!(r.status, 200);
    let html = body(&r);
    assert!(html.contains("data-id=\"AAAAAAA-BBBBBBB\""), "{html}");
    assert!(html.contains("1.5 ms"), "{html}");
    assert!(
        html.contains("&lt;script&gt;") && !html.contains("<script>"),
        "{html}"
    );
    assert!(html.contains("desk &lt;&amp;&gt;"));
    assert_eq!(s.route(&req("GET", "/nope", "")).status, 404);
    assert_eq!(s.route(&req("DELETE", "/", "")).status, 405);
    let m = s.route(&req("GET", "/metrics", ""));
    assert!(m.content_type.starts_with("text/plain; version=0.0.4"));
    assert!(body(&m).contains(
        "fybrk_peer_info{peer=\"AAAAAAA-BBBBBBB\",name=\"AAAAAAA-BBBBBBB\",path=\"lan\"} 1"
    ));
}

#[test]
fn actions_reach_the_handler() {
    let s = site();
    let r = s.route(&req("POST", "/restore", "path=%2Fa+b.txt&version=7"));
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/history?path=a%20b.txt&restored=1");
    let r = s.route(&req("GET", "/history?path=a+b.txt&restored=1", ""));
    let html = body(&r);
    assert!(
        html.contains("id=\"restore-7\"") && html.contains("id=\"note\""),
        "{html}"
    );
    let r = s.route(&req("GET", "/history?path=x", ""));
    assert!(body(&r).contains("x has no history"));
    assert_eq!(s.route(&req("POST", "/restore", "path=a")).status, 400);
    let r = s.route(&req("POST", "/approve", "id=CCCCCCC"));
    assert_eq!((r.status, location(&r)), (303, "/"));
    let r = s.route(&req("POST", "/deny", "id=CCCCCCC"));
    assert_eq!(r.status, 500);
    assert!(body(&r).contains("no such request"));
    let r = s.route(&req("POST", "/pair", ""));
    let html = body(&r);
    assert!(
        html.contains("<svg id=\"qr\"") && html.contains("fybrk1:ABC"),
        "{html}"
    );
    let calls = s.handler.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "restore a b.txt Some(7) None",
            "approve CCCCCCC",
            "deny CCCCCCC",
            "pair 600 false"
        ]
    );
}

proptest! {
    #[test]
    fn no_request_panics(
        method in prop::sample::select(vec!["GET", "POST", "HEAD", "PUT"]),
        path in prop::sample::select(vec!["/", "/pair", "/history", "/restore", "/approve", "/deny", "/metrics", "/x"]),
        query in "[a-z=&%+0-9]{0,30}",
        form in "[a-z=&%+0-9/]{0,40}",
    ) {
        let s = site();
        let _ = s.route(&req(method, &format!("{path}?{query}"), &form));
    }
}
