use super::*;
use crate::proto::model_infer_request::InferInputTensor;
use crate::proto::model_infer_response::InferOutputTensor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::duplex;

fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        model_version: "3".into(),
        id: "client-id".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from_static(&[0, 0, 128, 63, 0, 0, 0, 64])],
        ..Default::default()
    }
}

fn answer() -> Answer {
    Answer {
        response: ModelInferResponse {
            model_name: "m".into(),
            model_version: "3".into(),
            id: "client-id".into(),
            outputs: vec![InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                ..Default::default()
            }],
            raw_output_contents: vec![Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])],
            ..Default::default()
        },
        wait_us: 7,
        inference_us: u64::MAX,
    }
}

/// Runs a test's body with a bound, so that a fault that leaves a reader waiting fails
/// the test instead of hanging it.
async fn within<T>(body: impl Future<Output = T>) -> T {
    (tokio::time::timeout(Duration::from_secs(10), body).await).expect("the test finished in time")
}

/// The payload of the one frame in `bytes`, checking its length prefix.
fn payload(bytes: &[u8]) -> Bytes {
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - 4, "the length prefix counts the payload");
    Bytes::copy_from_slice(&bytes[4..])
}

#[test]
fn a_call_crosses_whole() {
    let mut out = MAGIC.to_vec();
    encode_call(&mut out, "alice@issuer", "req-1", &request()).unwrap();
    assert_eq!(&out[..8], MAGIC, "what was in the buffer stays first");
    let call = decode_call(payload(&out[8..])).unwrap();
    assert_eq!(
        call,
        Call {
            principal: "alice@issuer".into(),
            request_id: "req-1".into(),
            request: request(),
        }
    );
}

#[test]
fn an_answer_and_every_error_code_cross_whole() {
    let mut out = Vec::new();
    encode_answer(&mut out, &Ok(answer()));
    assert_eq!(decode_answer(payload(&out)).unwrap().unwrap(), answer());
    for code in 1..=16 {
        let status = Status::new(Code::from(code), "model \"m\" is not served");
        out.clear();
        encode_answer(&mut out, &Err(status));
        let back = decode_answer(payload(&out)).unwrap().unwrap_err();
        assert_eq!(back.code() as i32, code);
        assert_eq!(back.message(), "model \"m\" is not served");
    }
}

#[test]
fn an_ok_status_sent_as_an_error_is_unknown_not_success() {
    let mut out = Vec::new();
    encode_answer(&mut out, &Err(Status::new(Code::Ok, "odd")));
    let back = decode_answer(payload(&out)).unwrap().unwrap_err();
    assert_eq!(back.code(), Code::Unknown);
}

#[test]
fn names_longer_than_a_u16_are_refused_not_cut() {
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    let mut out = Vec::new();
    assert_eq!(encode_call(&mut out, &long, "r", &request()), None);
    assert_eq!(encode_call(&mut out, "p", &long, &request()), None);
    assert!(out.is_empty(), "nothing written for a refused call");
    let fits = "a".repeat(MAX_NAME_BYTES);
    encode_call(&mut out, &fits, &fits, &request()).unwrap();
    let call = decode_call(payload(&out)).unwrap();
    assert_eq!(
        (call.principal.len(), call.request_id.len()),
        (MAX_NAME_BYTES, MAX_NAME_BYTES)
    );
}

#[test]
fn malformed_payloads_are_refused() {
    let mut good = Vec::new();
    encode_call(&mut good, "p", "r", &request()).unwrap();
    let good = payload(&good);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty frame"),
        (vec![2], "unknown call kind"),
        (vec![CALL_INFER, 5], "short name"),
        (vec![CALL_INFER, 5, 0, b'a'], "short name"),
        (vec![CALL_INFER, 1, 0, 0xff, 0, 0], "name not UTF-8"),
        (
            vec![CALL_INFER, 0, 0, 0, 0, 0x0a, 0x05, b'a'],
            "bad request",
        ),
    ];
    for (bytes, why) in cases {
        assert_eq!(decode_call(Bytes::from(bytes)).unwrap_err(), Malformed(why));
    }
    // Every cut of a good call short of its name fields is refused.
    for cut in 0..6 {
        assert!(decode_call(good.slice(..cut)).is_err(), "cut at {cut}");
    }
    let answers: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty frame"),
        (vec![0, 1, 2], "short answer"),
        (vec![17, b'x'], "unknown answer code"),
        ([&[0u8; 17][..], &[0x0a, 0x09]].concat(), "bad response"),
    ];
    for (bytes, why) in answers {
        assert_eq!(
            decode_answer(Bytes::from(bytes)).unwrap_err(),
            Malformed(why)
        );
    }
}

#[tokio::test]
async fn frames_are_read_whole_across_short_reads_and_a_clean_end_is_none() {
    within(async {
        let (mut a, mut b) = duplex(3);
        let mut bytes = Vec::new();
        encode_call(&mut bytes, "p", "r1", &request()).unwrap();
        encode_call(&mut bytes, "p", "r2", &request()).unwrap();
        let writer = tokio::spawn(async move {
            b.write_all(&bytes).await.unwrap();
        });
        let mut buf = BytesMut::new();
        for id in ["r1", "r2"] {
            let frame = read_frame(&mut a, &mut buf, 1 << 20)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(decode_call(frame).unwrap().request_id, id);
        }
        writer.await.unwrap();
        assert_eq!(read_frame(&mut a, &mut buf, 1 << 20).await.unwrap(), None);
    })
    .await
}

#[tokio::test]
async fn a_frame_cut_short_is_an_error_not_an_end() {
    within(async {
        for cut in [2usize, 6] {
            let (mut a, mut b) = duplex(64);
            b.write_all(&[10, 0, 0, 0, 1, 2][..cut]).await.unwrap();
            drop(b);
            let e = read_frame(&mut a, &mut BytesMut::new(), 64)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    })
    .await
}

#[tokio::test]
async fn a_length_over_the_bound_is_refused_before_its_bytes_arrive() {
    within(async {
        let (mut a, mut b) = duplex(64);
        // Only the length is sent: a reader that waited for the payload would hang.
        b.write_all(&((1u32 << 20) + 1).to_le_bytes())
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        let e = read_frame(&mut a, &mut buf, 1 << 20).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            buf.capacity() < 1 << 20,
            "nothing allocated for the refused length"
        );
        // At the bound it is read.
        let (mut a, mut b) = duplex(4096);
        b.write_all(&(1024u32).to_le_bytes()).await.unwrap();
        b.write_all(&[7; 1024]).await.unwrap();
        let frame = read_frame(&mut a, &mut BytesMut::new(), 1024)
            .await
            .unwrap();
        assert_eq!(frame.unwrap().len(), 1024);
    })
    .await
}

#[tokio::test]
async fn open_tells_frames_from_the_http2_preface_and_replays_its_byte() {
    within(async {
        let (a, mut b) = duplex(64);
        b.write_all(MAGIC).await.unwrap();
        b.write_all(b"next").await.unwrap();
        let Opened::Frames(mut s) = open(a).await.unwrap() else {
            panic!("magic not recognised")
        };
        let mut next = [0u8; 4];
        s.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"next", "the magic is consumed, nothing after it");

        let (a, mut b) = duplex(64);
        b.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        drop(b);
        let Opened::Grpc(mut s) = open(a).await.unwrap() else {
            panic!("preface taken for frames")
        };
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI * HTTP/2.0\r\n", "gRPC reads the preface whole");

        let (a, mut b) = duplex(64);
        b.write_all(b"WARDENF0").await.unwrap();
        assert!(matches!(open(a).await, Err(e) if e.kind() == io::ErrorKind::InvalidData));
    })
    .await
}

/// Answers after `delay`, counting calls started and calls finished (not dropped).
#[derive(Default)]
struct Echo {
    delay: Duration,
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl Infer for Echo {
    async fn infer(&self, call: Call) -> Result<Answer, Status> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        if call.request.model_name != "m" {
            return Err(Status::not_found("no such model"));
        }
        let mut a = answer();
        a.response.id = format!("{} {}", call.principal, call.request_id);
        Ok(a)
    }
}

async fn call(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    model: &str,
) -> Result<Answer, Status> {
    let mut out = Vec::new();
    let mut r = request();
    r.model_name = model.into();
    encode_call(&mut out, "alice", "req-9", &r).unwrap();
    s.write_all(&out).await.unwrap();
    let frame = read_frame(s, &mut BytesMut::new(), 1 << 20)
        .await
        .unwrap()
        .unwrap();
    decode_answer(frame).unwrap()
}

#[tokio::test]
async fn serve_answers_calls_in_turn_with_the_callers_names() {
    within(async {
        let echo = Arc::new(Echo::default());
        let (mut a, b) = duplex(1 << 16);
        let server = tokio::spawn(serve(b, Arc::clone(&echo)));
        let first = call(&mut a, "m").await.unwrap();
        assert_eq!(first.response.id, "alice req-9");
        assert_eq!(
            first.response.raw_output_contents,
            answer().response.raw_output_contents
        );
        let missing = call(&mut a, "other").await.unwrap_err();
        assert_eq!(
            (missing.code(), missing.message()),
            (Code::NotFound, "no such model")
        );
        drop(a);
        server.await.unwrap().unwrap();
        assert_eq!(echo.finished.load(Ordering::SeqCst), 2);
    })
    .await
}

/// A connection served by an [`Echo`] that takes 30 s, with one call sent on it: the
/// client's end, the server's task, the echo, and the call's bytes.
async fn a_call_that_runs_long() -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<io::Result<()>>,
    Arc<Echo>,
    Vec<u8>,
) {
    let echo = Arc::new(Echo {
        delay: Duration::from_secs(30),
        ..Default::default()
    });
    let (mut a, b) = duplex(1 << 16);
    let server = tokio::spawn(serve(b, Arc::clone(&echo)));
    let mut out = Vec::new();
    encode_call(&mut out, "p", "r", &request()).unwrap();
    a.write_all(&out).await.unwrap();
    (a, server, echo, out)
}

#[tokio::test]
async fn a_closed_connection_drops_its_running_call() {
    within(async {
        let (a, server, echo, _) = a_call_that_runs_long().await;
        while echo.started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(a);
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "the connection ends at once: {ended:?}"
        );
        assert_eq!(
            echo.finished.load(Ordering::SeqCst),
            0,
            "the call was dropped"
        );
    })
    .await
}

#[tokio::test]
async fn a_second_call_while_one_runs_or_a_malformed_frame_ends_the_connection() {
    within(async {
        let (mut a, server, echo, out) = a_call_that_runs_long().await;
        a.write_all(&out).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(echo.finished.load(Ordering::SeqCst), 0);

        let (mut a, b) = duplex(1 << 16);
        let server = tokio::spawn(serve(b, Arc::new(Echo::default())));
        a.write_all(&[1, 0, 0, 0, 9]).await.unwrap();
        let e = server.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing answered to a malformed frame");
    })
    .await
}

#[test]
fn a_long_error_message_is_cut_at_a_character_not_inside_one() {
    let long = "é".repeat(MAX_NAME_BYTES);
    let mut out = Vec::new();
    encode_answer(&mut out, &Err(Status::internal(long.clone())));
    let back = decode_answer(payload(&out)).unwrap().unwrap_err();
    assert_eq!(back.code(), Code::Internal);
    assert!(back.message().len() <= MAX_NAME_BYTES);
    assert!(
        back.message().len() >= MAX_NAME_BYTES - 1,
        "cut at the bound"
    );
    assert!(
        long.starts_with(back.message()),
        "no replacement character: a clean cut"
    );
}

#[test]
fn a_call_at_the_frame_bound_is_written_and_one_byte_past_it_is_not() {
    let r = request();
    let mut out = Vec::new();
    encode_call(&mut out, "p", "r", &r).unwrap();
    let len = out.len() - 4;
    out.clear();
    assert_eq!(encode_call_within(&mut out, "p", "r", &r, len - 1), None);
    assert!(out.is_empty(), "nothing written for a refused call");
    encode_call_within(&mut out, "p", "r", &r, len).unwrap();
    assert_eq!(decode_call(payload(&out)).unwrap().request, r);
}

#[test]
fn an_answer_past_the_frame_bound_is_sent_as_resource_exhausted() {
    let mut out = Vec::new();
    encode_answer(&mut out, &Ok(answer()));
    let len = out.len() - 4;
    out.clear();
    encode_answer_within(&mut out, &Ok(answer()), len);
    assert_eq!(
        decode_answer(payload(&out)).unwrap().unwrap(),
        answer(),
        "at the bound"
    );
    out.clear();
    encode_answer_within(&mut out, &Ok(answer()), len - 1);
    let e = decode_answer(payload(&out)).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.message(), "the answer is larger than the socket carries");
}

#[test]
fn a_call_whose_request_is_empty_ends_with_its_request_id() {
    // The request id then runs to the payload's very end.
    let mut out = Vec::new();
    encode_call(&mut out, "", "req", &ModelInferRequest::default()).unwrap();
    let call = decode_call(payload(&out)).unwrap();
    assert_eq!(
        (call.principal.as_str(), call.request_id.as_str()),
        ("", "req")
    );
    assert_eq!(call.request, ModelInferRequest::default());
}

#[test]
fn a_malformed_frame_names_what_was_wrong_in_the_log() {
    let e = io::Error::from(Malformed("unknown call kind"));
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(e.to_string(), "malformed frame: unknown call kind");
}

#[tokio::test]
async fn what_grpc_writes_on_a_replayed_stream_reaches_the_peer_whole() {
    within(async {
        let (a, mut b) = duplex(1 << 16);
        b.write_all(b"PRI").await.unwrap();
        let Opened::Grpc(mut s) = open(a).await.unwrap() else {
            panic!("preface taken for frames")
        };
        s.write_all(b"settings").await.unwrap();
        let parts = [io::IoSlice::new(b"head"), io::IoSlice::new(b"ers")];
        let n = s.write_vectored(&parts).await.unwrap();
        assert!(n > 0);
        assert_eq!(
            s.is_write_vectored(),
            b.is_write_vectored(),
            "as the stream under it says"
        );
        s.flush().await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..12], b"settingshead", "every byte, in order");
        assert_eq!(got.len(), 8 + n);
    })
    .await
}

#[tokio::test]
async fn route_serves_frames_itself_and_hands_anything_else_to_grpc() {
    within(async {
        let (grpc, mut incoming) = tokio::sync::mpsc::channel(1);
        let (mut a, b) = duplex(1 << 16);
        let echo = Arc::new(Echo::default());
        let routed = tokio::spawn({
            let (grpc, echo) = (grpc.clone(), Arc::clone(&echo));
            async move { route(b, &grpc, echo).await }
        });
        a.write_all(MAGIC).await.unwrap();
        assert_eq!(call(&mut a, "m").await.unwrap().response.id, "alice req-9");
        drop(a);
        routed.await.unwrap().unwrap();
        assert!(
            incoming.try_recv().is_err(),
            "a framed connection never reaches gRPC"
        );

        let (mut a, b) = duplex(64);
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        drop(a);
        route(b, &grpc, echo).await.unwrap();
        let mut handed = incoming.recv().await.unwrap().unwrap();
        let mut all = Vec::new();
        handed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"PRI * HTTP/2.0");
    })
    .await
}
