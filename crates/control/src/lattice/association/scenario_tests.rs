//! The P0 scenario through the real APIs of every module involved (EC2 VPCs and security
//! groups, services, listeners), checking that the references they keep agree with the ones
//! target groups and associations read: `serviceArns`, target statuses and the delete guards.

use serde_json::json;

use crate::test_util::{app, call, ec2};

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).map_or(0, |i| i + open.len());
    let end = text[start..].find(close).map_or(text.len(), |i| start + i);
    &text[start..end]
}

#[tokio::test]
async fn p0_scenario_across_modules() {
    let (app, _dir) = app();
    let (status, xml) = ec2(&app, &[("Action", "CreateVpc"), ("CidrBlock", "10.0.0.0/16")]).await;
    assert_eq!(status, 200, "{xml}");
    let vpc = between(&xml, "<vpcId>", "</vpcId>").to_owned();
    let (status, xml) = ec2(
        &app,
        &[("Action", "CreateSecurityGroup"), ("GroupName", "lattice"), ("GroupDescription", "d"), ("VpcId", &vpc)],
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    let sg = between(&xml, "<groupId>", "</groupId>").to_owned();

    let (_, _, sn) = call(&app, "POST", "/servicenetworks", Some(json!({"name": "demo-net"}))).await;
    let sn_id = sn["id"].as_str().unwrap().to_owned();
    let body = json!({"serviceNetworkIdentifier": sn_id, "vpcIdentifier": vpc, "securityGroupIds": [sg]});
    let (status, _, snva) = call(&app, "POST", "/servicenetworkvpcassociations", Some(body)).await;
    assert_eq!(status, 200, "{snva}");
    // EC2 refuses to delete a VPC that is associated with a service network.
    let (status, xml) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &vpc)]).await;
    assert!(status.is_client_error() && xml.contains("DependencyViolation"), "{xml}");

    let (status, _, svc) = call(&app, "POST", "/services", Some(json!({"name": "web"}))).await;
    assert_eq!(status, 201, "{svc}");
    let svc_id = svc["id"].as_str().unwrap().to_owned();
    let config = json!({"port": 8080, "protocol": "HTTP", "vpcIdentifier": vpc});
    let (status, _, tg) =
        call(&app, "POST", "/targetgroups", Some(json!({"name": "web-tg", "type": "IP", "config": config}))).await;
    assert_eq!(status, 201, "{tg}");
    let tg_id = tg["id"].as_str().unwrap().to_owned();
    let (status, _, reg) = call(
        &app,
        "POST",
        &format!("/targetgroups/{tg_id}/registertargets"),
        Some(json!({"targets": [{"id": "10.0.1.23"}]})),
    )
    .await;
    assert_eq!((status.as_u16(), reg["successful"].as_array().unwrap().len()), (200, 1), "{reg}");
    let (_, _, list) = call(&app, "POST", &format!("/targetgroups/{tg_id}/listtargets"), Some(json!({}))).await;
    assert_eq!(list["items"][0]["status"], "UNUSED");

    let listener = json!({"name": "http-80", "protocol": "HTTP", "port": 80,
        "defaultAction": {"forward": {"targetGroups": [{"targetGroupIdentifier": tg_id}]}}});
    let (status, _, l) = call(&app, "POST", &format!("/services/{svc_id}/listeners"), Some(listener)).await;
    assert_eq!(status, 201, "{l}");
    let (_, _, got) = call(&app, "GET", &format!("/targetgroups/{tg_id}"), None).await;
    assert_eq!(got["serviceArns"], json!([svc["arn"]]));
    let (_, _, list) = call(&app, "POST", &format!("/targetgroups/{tg_id}/listtargets"), Some(json!({}))).await;
    assert_eq!(list["items"][0]["status"], "INITIAL");
    let (status, code, _) = call(&app, "DELETE", &format!("/targetgroups/{tg_id}"), None).await;
    assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")));

    let body = json!({"serviceIdentifier": svc["arn"], "serviceNetworkIdentifier": sn_id});
    let (status, _, snsa) = call(&app, "POST", "/servicenetworkserviceassociations", Some(body)).await;
    assert_eq!(status, 200, "{snsa}");
    assert_eq!(snsa["dnsEntry"], svc["dnsEntry"]);
    let (status, code, _) = call(&app, "DELETE", &format!("/services/{svc_id}"), None).await;
    assert_eq!((status.as_u16(), code.as_deref()), (409, Some("ConflictException")), "associated services stay");

    // Tear down in dependency order; each guard lets go once its dependants are gone.
    let (status, _, _) =
        call(&app, "DELETE", &format!("/servicenetworkserviceassociations/{}", snsa["id"].as_str().unwrap()), None)
            .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "DELETE", &format!("/services/{svc_id}"), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "DELETE", &format!("/targetgroups/{tg_id}"), None).await;
    assert_eq!(status, 200, "the service's deletion released the target group");
    let (status, _, _) =
        call(&app, "DELETE", &format!("/servicenetworkvpcassociations/{}", snva["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, "DELETE", &format!("/servicenetworks/{sn_id}"), None).await;
    assert_eq!(status, 204);
    let (status, xml) = ec2(&app, &[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)]).await;
    assert_eq!(status, 200, "{xml}");
    let (status, xml) = ec2(&app, &[("Action", "DeleteVpc"), ("VpcId", &vpc)]).await;
    assert_eq!(status, 200, "{xml}");
}
