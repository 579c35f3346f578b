//! The API endpoint as a whole: health, forgery refusal, service dispatch, regions.

use crate::support::{TestApp, signed};

#[tokio::test]
async fn health_answers() {
    let app = TestApp::spawn().await;
    let a = app.send("GET", "/_trellis/health", &[], "").await;
    assert_eq!(a.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn forgeable_requests_are_refused() {
    let app = TestApp::spawn().await;
    let own = format!("http://{}", app.addr);
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[("origin", "http://evil.example")], 403),
        (&[("sec-fetch-site", "cross-site")], 403),
        (&[("host", "rebound.example:7700")], 403),
        (&[("origin", own.as_str())], 200),
        (&[("sec-fetch-site", "same-origin")], 200),
    ];
    for (headers, want) in cases {
        let a = app.send("GET", "/servicenetworks", headers, "").await;
        assert_eq!(a.status, want, "{headers:?}: {}", a.json);
    }
    let a = app.send("GET", "/servicenetworks", &[("host", &format!("localhost:{}", app.addr.port()))], "").await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn services_are_told_apart() {
    let app = TestApp::spawn().await;
    // A scope naming a service Trellis does not serve, and a request that names none.
    let a = app.send("GET", "/", &[("authorization", &signed("us-east-1", "s3"))], "").await;
    assert_eq!(a.status, 400);
    let a = app.send("POST", "/", &[("content-type", "application/x-www-form-urlencoded")], "Action=Nope").await;
    assert_eq!(a.status, 400);
    // Unsigned Lattice by path; unknown path is a ValidationException (unknownOperation).
    let a = app.send("GET", "/nothing-here", &[], "").await;
    assert_eq!((a.status, a.json["reason"].as_str()), (400, Some("unknownOperation")));
}

#[tokio::test]
async fn resources_live_per_region() {
    let app = TestApp::spawn().await;
    let eu = signed("eu-west-1", "vpc-lattice");
    let a = app
        .send(
            "POST",
            "/servicenetworks",
            &[("authorization", &eu), ("content-type", "application/json")],
            r#"{"name":"eu-net"}"#,
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    assert!(a.json["arn"].as_str().unwrap().starts_with("arn:aws:vpc-lattice:eu-west-1:000000000000:"));
    let id = a.json["id"].as_str().unwrap().to_owned();
    let here = app.send("GET", &format!("/servicenetworks/{id}"), &[("authorization", &eu)], "").await;
    assert_eq!(here.status, 200);
    let unsigned = app.send("GET", &format!("/servicenetworks/{id}"), &[], "").await;
    assert_eq!(unsigned.status, 404, "the default region is us-east-1");
    let us = app.send("GET", "/servicenetworks", &[("authorization", &signed("us-east-1", "vpc-lattice"))], "").await;
    assert_eq!(us.json["items"].as_array().unwrap().len(), 0);
    assert!(us.headers.contains_key("x-amzn-requestid"));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let app = TestApp::spawn().await;
    let a = app.send("POST", "/servicenetworks", &[("content-type", "application/json")], r#"{"name":"kept"}"#).await;
    let id = a.json["id"].as_str().unwrap().to_owned();
    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir).await;
    let a = app.send("GET", &format!("/servicenetworks/{id}"), &[], "").await;
    assert_eq!((a.status, a.json["name"].as_str()), (200, Some("kept")));
    let a = app.send("POST", "/servicenetworks", &[("content-type", "application/json")], r#"{"name":"kept"}"#).await;
    assert_eq!(a.status, 409, "the name index survived too");
}
