//! Association handler tests. Service networks are made through the API; VPCs, security groups
//! and services are seeded into the store.

use axum::Router;
use serde_json::{Value, json};

use crate::Quotas;
use crate::keys::rel;
use crate::lattice::target_group::tests::{
    OTHER_VPC, VPC, app_store, arn_path, counter, keys, seed_service, seed_sg, seed_vpc,
};
use crate::test_util::call;

const SG: &str = "sg-0123456789abcdef0";
const OTHER_SG: &str = "sg-0fedcba9876543210";

async fn sn(app: &Router, name: &str) -> Value {
    let (status, _, sn) = call(app, "POST", "/servicenetworks", Some(json!({"name": name}))).await;
    assert_eq!(status, 201, "{sn}");
    sn
}

fn field(body: &Value) -> &str {
    body["fieldList"][0]["name"].as_str().unwrap_or_default()
}

fn ids(list: &Value) -> Vec<&str> {
    list["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn vpc_association_lifecycle() {
    let (app, store, _dir) = app_store(Quotas::default());
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    seed_sg(&store, SG, VPC).await;
    seed_sg(&store, OTHER_SG, OTHER_VPC).await;
    let net = sn(&app, "net-one").await;
    let net_id = net["id"].as_str().unwrap();
    let body = json!({"serviceNetworkIdentifier": net["arn"], "vpcIdentifier": VPC, "securityGroupIds": [SG], "clientToken": "c1"});
    let (status, _, a) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body.clone())).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(
        (&a["status"], &a["createdBy"], &a["securityGroupIds"]),
        (&json!("CREATE_IN_PROGRESS"), &json!("000000000000"), &json!([SG]))
    );
    assert_eq!(a["privateDnsEnabled"], true);
    let id = a["id"].as_str().unwrap().to_owned();
    let (status, _, again) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body)).await;
    assert_eq!((status.as_u16(), &again["id"]), (200, &a["id"]));

    let (status, _, got) =
        call(&app, "GET", &format!("/servicenetworkvpcassociations/{}", arn_path(&a["arn"])), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (&got["status"], &got["serviceNetworkName"], &got["serviceNetworkArn"]),
        (&json!("ACTIVE"), &net["name"], &net["arn"])
    );
    assert_eq!((&got["vpcId"], &got["serviceNetworkId"]), (&json!(VPC), &net["id"]));
    assert!(got.get("createdAt").is_some() && got.get("lastUpdatedAt").is_some());
    let (_, _, g) = call(&app, "GET", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(g["numberOfAssociatedVPCs"], 1);
    assert_eq!(counter(&store, keys().counter(rel::VPC_SNVA, VPC)).await, 1);

    // One service network per VPC.
    let other = sn(&app, "net-two").await;
    let (status, code, body) = call(
        &app,
        "POST",
        "/servicenetworkvpcassociations",
        Some(json!({"serviceNetworkIdentifier": other["id"], "vpcIdentifier": VPC})),
    )
    .await;
    assert_eq!((status.as_u16(), code.as_deref(), &body["resourceId"]), (409, Some("ConflictException"), &json!(id)));
    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(status, 409, "the network is in use");

    for query in [
        format!("serviceNetworkIdentifier={net_id}"),
        format!("vpcIdentifier={VPC}"),
        String::new(),
        format!("serviceNetworkIdentifier={}&vpcIdentifier={VPC}", net["id"].as_str().unwrap()),
    ] {
        let (status, _, list) = call(&app, "GET", &format!("/servicenetworkvpcassociations?{query}"), None).await;
        assert_eq!((status.as_u16(), ids(&list)), (200, vec![id.as_str()]), "{query}");
        let item = &list["items"][0];
        assert_eq!(
            (&item["serviceNetworkName"], &item["vpcId"], &item["privateDnsEnabled"]),
            (&net["name"], &json!(VPC), &json!(true))
        );
    }
    let (_, _, list) = call(
        &app,
        "GET",
        &format!("/servicenetworkvpcassociations?serviceNetworkIdentifier={}", other["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(list, json!({"items": []}));

    let path = format!("/servicenetworkvpcassociations/{id}");
    let (status, _, body) = call(&app, "PATCH", &path, Some(json!({"securityGroupIds": []}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "securityGroupIds"));
    let (status, _, body) = call(&app, "PATCH", &path, Some(json!({"securityGroupIds": [OTHER_SG]}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "securityGroupIds"));
    let (status, _, body) =
        call(&app, "PATCH", &path, Some(json!({"securityGroupIds": ["sg-00000000000000001"]}))).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SECURITY_GROUP")));
    let (status, _, up) =
        call(&app, "PATCH", &path, Some(json!({"securityGroupIds": [SG], "privateDnsEnabled": false}))).await;
    assert_eq!(status, 200, "{up}");
    assert_eq!(
        (&up["status"], &up["privateDnsEnabled"], &up["securityGroupIds"]),
        (&json!("UPDATE_IN_PROGRESS"), &json!(false), &json!([SG]))
    );
    let (_, _, got) = call(&app, "GET", &path, None).await;
    assert_eq!((&got["status"], &got["privateDnsEnabled"]), (&json!("ACTIVE"), &json!(false)));

    let (status, _, del) = call(&app, "DELETE", &path, None).await;
    assert_eq!((status.as_u16(), &del["status"], &del["arn"]), (200, &json!("DELETE_IN_PROGRESS"), &a["arn"]));
    let (status, _, body) = call(&app, "GET", &path, None).await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE_NETWORK_VPC_ASSOCIATION")));
    assert_eq!(counter(&store, keys().counter(rel::VPC_SNVA, VPC)).await, 0);
    // The VPC is free for another network, and the first network can go.
    let (status, _, _) = call(
        &app,
        "POST",
        "/servicenetworkvpcassociations",
        Some(json!({"serviceNetworkIdentifier": other["id"], "vpcIdentifier": VPC})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn vpc_association_errors_and_quota() {
    let (app, store, _dir) = app_store(Quotas { vpc_associations_per_service_network: 1, ..Default::default() });
    seed_vpc(&store, VPC, "10.0.0.0/16").await;
    seed_vpc(&store, OTHER_VPC, "10.1.0.0/16").await;
    seed_sg(&store, SG, VPC).await;
    let net = sn(&app, "net-one").await;
    let n = net["id"].clone();
    let sgs: Vec<_> = (1..=6).map(|i| format!("sg-0000000000000000{i}")).collect();
    let cases = [
        (json!({"vpcIdentifier": VPC}), "serviceNetworkIdentifier"),
        (json!({"serviceNetworkIdentifier": n}), "vpcIdentifier"),
        (json!({"serviceNetworkIdentifier": "bad", "vpcIdentifier": VPC}), "serviceNetworkIdentifier"),
        (json!({"serviceNetworkIdentifier": n, "vpcIdentifier": "vpc-?"}), "vpcIdentifier"),
        (json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "securityGroupIds": sgs}), "securityGroupIds"),
        (
            json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "securityGroupIds": ["nope"]}),
            "securityGroupIds",
        ),
        (
            json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "dnsOptions": {"privateDnsPreference": "SOME"}}),
            "dnsOptions.privateDnsPreference",
        ),
        (
            json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "dnsOptions": {"privateDnsPreference": "SPECIFIED_DOMAINS_ONLY"}}),
            "dnsOptions.privateDnsSpecifiedDomains",
        ),
        (
            json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "dnsOptions": {"privateDnsPreference": "ALL_DOMAINS", "privateDnsSpecifiedDomains": ["a.example"]}}),
            "dnsOptions.privateDnsSpecifiedDomains",
        ),
        (json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "privateDnsEnabled": "yes"}), "privateDnsEnabled"),
    ];
    for (body, member) in cases {
        let (status, _, resp) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body.clone())).await;
        assert_eq!((status.as_u16(), field(&resp)), (400, member), "{body} → {resp}");
    }
    let missing = [
        (json!({"serviceNetworkIdentifier": "sn-0123456789abcdef0", "vpcIdentifier": VPC}), "SERVICE_NETWORK"),
        (json!({"serviceNetworkIdentifier": n, "vpcIdentifier": "vpc-00000000000000001"}), "VPC"),
        (
            json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "securityGroupIds": ["sg-00000000000000001"]}),
            "SECURITY_GROUP",
        ),
    ];
    for (body, kind) in missing {
        let (status, _, resp) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body.clone())).await;
        assert_eq!((status.as_u16(), &resp["resourceType"]), (404, &json!(kind)), "{body} → {resp}");
    }
    let dns =
        json!({"privateDnsPreference": "SPECIFIED_DOMAINS_ONLY", "privateDnsSpecifiedDomains": ["a.example.com"]});
    let body =
        json!({"serviceNetworkIdentifier": n, "vpcIdentifier": VPC, "securityGroupIds": [SG, SG], "dnsOptions": dns});
    let (status, _, a) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body)).await;
    assert_eq!((status.as_u16(), &a["securityGroupIds"], &a["dnsOptions"]), (200, &json!([SG]), &dns));
    let (status, code, body) = call(
        &app,
        "POST",
        "/servicenetworkvpcassociations",
        Some(json!({"serviceNetworkIdentifier": n, "vpcIdentifier": OTHER_VPC})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), code.as_deref(), &body["quotaCode"]),
        (402, Some("ServiceQuotaExceededException"), &json!("L-EF6E2D62"))
    );
    let (status, _, _) = call(&app, "GET", "/servicenetworkvpcassociations/snva-0123456789abcdef0", None).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&app, "DELETE", "/servicenetworkvpcassociations/snva-0123456789abcdef0", None).await;
    assert_eq!(status, 404);
    let (_, _, body) = call(&app, "GET", "/servicenetworkvpcassociations?vpcIdentifier=x", None).await;
    assert_eq!(field(&body), "vpcIdentifier");
}

#[tokio::test]
async fn service_association_lifecycle() {
    let (app, store, _dir) = app_store(Quotas::default());
    let a = seed_service(&store, "web-a", Some("web.example.com")).await;
    let b = seed_service(&store, "web-b", Some("web.example.com")).await;
    let c = seed_service(&store, "plain", None).await;
    let net = sn(&app, "net-one").await;
    let net_id = net["id"].as_str().unwrap();
    let a_arn = format!("arn:aws:vpc-lattice:us-east-1:000000000000:service/{a}");
    let body = json!({"serviceIdentifier": a_arn, "serviceNetworkIdentifier": net["arn"], "clientToken": "x"});
    let (status, _, sa) = call(&app, "POST", "/servicenetworkserviceassociations", Some(body.clone())).await;
    assert_eq!(status, 200, "{sa}");
    assert_eq!(
        (&sa["status"], &sa["customDomainName"], &sa["createdBy"]),
        (&json!("CREATE_IN_PROGRESS"), &json!("web.example.com"), &json!("000000000000"))
    );
    assert_eq!(sa["dnsEntry"]["hostedZoneId"], "Z0000000000000000000");
    assert!(sa["dnsEntry"]["domainName"].as_str().unwrap().starts_with("web-a-"));
    let (_, _, again) = call(&app, "POST", "/servicenetworkserviceassociations", Some(body)).await;
    assert_eq!(again["id"], sa["id"]);
    let (status, code, _) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": a, "serviceNetworkIdentifier": net_id})),
    )
    .await;
    assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")), "the same pair twice");
    let (status, _, body) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": b, "serviceNetworkIdentifier": net_id})),
    )
    .await;
    assert_eq!((status.as_u16(), &body["resourceId"]), (409, &sa["id"]), "the custom domain is taken in this network");
    let (status, _, sc) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": c, "serviceNetworkIdentifier": net_id})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(sc.get("customDomainName").is_none());
    let (_, _, g) = call(&app, "GET", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(g["numberOfAssociatedServices"], 2);
    assert_eq!(counter(&store, keys().counter(rel::SVC_SN, &a)).await, 1);

    let (status, _, got) =
        call(&app, "GET", &format!("/servicenetworkserviceassociations/{}", arn_path(&sa["arn"])), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (&got["status"], &got["serviceName"], &got["serviceArn"], &got["serviceId"]),
        (&json!("ACTIVE"), &json!("web-a"), &json!(a_arn), &json!(a))
    );
    assert_eq!(
        (&got["serviceNetworkName"], &got["serviceNetworkArn"], &got["dnsEntry"]),
        (&net["name"], &net["arn"], &sa["dnsEntry"])
    );
    assert!(got.get("createdAt").is_some());

    let (_, _, list) =
        call(&app, "GET", &format!("/servicenetworkserviceassociations?serviceNetworkIdentifier={net_id}"), None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, _, list) =
        call(&app, "GET", &format!("/servicenetworkserviceassociations?serviceIdentifier={c}"), None).await;
    assert_eq!(ids(&list), [sc["id"].as_str().unwrap()]);
    assert_eq!(list["items"][0]["serviceName"], "plain");
    let (_, _, list) = call(
        &app,
        "GET",
        &format!("/servicenetworkserviceassociations?serviceIdentifier={c}&serviceNetworkIdentifier={net_id}"),
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, _, page) = call(&app, "GET", "/servicenetworkserviceassociations?maxResults=1", None).await;
    let token = page["nextToken"].as_str().unwrap();
    let (_, _, rest) =
        call(&app, "GET", &format!("/servicenetworkserviceassociations?maxResults=1&nextToken={token}"), None).await;
    assert!(rest.get("nextToken").is_none());
    let mut all = [ids(&page)[0], ids(&rest)[0]];
    all.sort();
    let mut want = [sa["id"].as_str().unwrap(), sc["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(all, want);

    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(status, 409);
    let (status, _, del) =
        call(&app, "DELETE", &format!("/servicenetworkserviceassociations/{}", sa["id"].as_str().unwrap()), None).await;
    assert_eq!((status.as_u16(), &del["status"], &del["arn"]), (200, &json!("DELETE_IN_PROGRESS"), &sa["arn"]));
    assert_eq!(counter(&store, keys().counter(rel::SVC_SN, &a)).await, 0);
    // The custom domain is free in this network now.
    let (status, _, sb) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": b, "serviceNetworkIdentifier": net_id})),
    )
    .await;
    assert_eq!(status, 200);
    for id in [&sb["id"], &sc["id"]] {
        call(&app, "DELETE", &format!("/servicenetworkserviceassociations/{}", id.as_str().unwrap()), None).await;
    }
    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{net_id}"), None).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn service_association_errors_and_quota() {
    let (app, store, _dir) = app_store(Quotas { service_associations_per_service_network: 1, ..Default::default() });
    let a = seed_service(&store, "one", None).await;
    let b = seed_service(&store, "two", None).await;
    let net = sn(&app, "net-one").await;
    let n = net["id"].clone();
    let (status, _, body) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": "svc-0123456789abcdef0", "serviceNetworkIdentifier": n})),
    )
    .await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE")));
    let (status, _, body) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": a, "serviceNetworkIdentifier": "sn-0123456789abcdef0"})),
    )
    .await;
    assert_eq!((status.as_u16(), &body["resourceType"]), (404, &json!("SERVICE_NETWORK")));
    let (status, _, body) =
        call(&app, "POST", "/servicenetworkserviceassociations", Some(json!({"serviceIdentifier": a}))).await;
    assert_eq!((status.as_u16(), field(&body)), (400, "serviceNetworkIdentifier"));
    let (status, _, body) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": "svc", "serviceNetworkIdentifier": n})),
    )
    .await;
    assert_eq!((status.as_u16(), field(&body)), (400, "serviceIdentifier"));
    let (status, _, _) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": a, "serviceNetworkIdentifier": n})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call(
        &app,
        "POST",
        "/servicenetworkserviceassociations",
        Some(json!({"serviceIdentifier": b, "serviceNetworkIdentifier": n})),
    )
    .await;
    assert_eq!((status.as_u16(), &body["quotaCode"]), (402, &json!("L-75D4A19E")));
    let (status, _, _) = call(&app, "GET", "/servicenetworkserviceassociations/snsa-0123456789abcdef0", None).await;
    assert_eq!(status, 404);
    let (_, _, body) = call(&app, "GET", "/servicenetworkserviceassociations?serviceIdentifier=x", None).await;
    assert_eq!(field(&body), "serviceIdentifier");
}
