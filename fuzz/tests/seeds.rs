//! Writes the seed corpora of `fuzz/corpus/` from real samples: batches of readings that the
//! gateway decodes from the firmware's own register maps, commands and envelopes signed
//! the way ingest signs them, the CAP fixture and the line protocol of the tests, the
//! shipped profiles and example configs. Ignored in normal runs; regenerate with
//! `cargo test -p village-fuzz --test seeds -- --ignored` after a wire format changes.

use std::fs;
use std::path::Path;

use firmware::barn_climate::{BarnClimate, ClimateInputs};
use firmware::modbus::{RegisterMap, read_bits, read_registers};
use firmware::speaker::{self, Speaker};
use firmware::water_meter::{MeterInputs, WaterMeter};
use firmware::water_quality::{QualityInputs, WaterQuality};
use gateway::modbus::{Attempts, DeviceReader};
use gateway::profile::Library;
use protocol::auth;
use protocol::codec::{self, Codec};
use protocol::command::{Action, Command, Content, Level, Playback};
use protocol::delivery::DeliveryAck;
use protocol::receipt::Receipt;
use protocol::topic::{Channel, Topic};
use protocol::{Batch, Metric, Quality, Reading, Timestamp};
use village_fuzz::targets::keys;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ is inside the repository")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed written");
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn with(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(rest);
    v
}

fn le_words(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// One poll of a firmware device through the built-in profile `model`: the responses the
/// gateway gets (as the fuzz input spells them: bits one byte, words two) and its readings.
fn poll(device: &dyn RegisterMap, id: &str, model: &str) -> (Vec<u8>, Vec<Reading>) {
    let (library, _) = Library::builtin();
    let profile = library.get(model).expect("built-in profile");
    let reader = DeviceReader::new(id, 1, profile, Attempts::default());
    let mut bytes = Vec::new();
    let mut responses = Vec::new();
    for r in reader.reads() {
        let words: Vec<u16> = if r.table.is_bits() {
            let mut bits = vec![false; usize::from(r.count)];
            read_bits(device, r.table, r.start, &mut bits).expect("the device answers its profile's reads");
            bits.iter().map(|b| u16::from(*b)).collect()
        } else {
            let mut words = vec![0u16; usize::from(r.count)];
            read_registers(device, r.table, r.start, &mut words).expect("the device answers its profile's reads");
            words
        };
        if r.table.is_bits() {
            bytes.extend(words.iter().map(|w| *w as u8));
        } else {
            bytes.extend(le_words(&words));
        }
        responses.push(words);
    }
    let readings = reader.decode(&responses, Timestamp(keys::NOW_MS)).expect("a real poll decodes");
    (bytes, readings)
}

fn models() -> Vec<String> {
    let (library, _) = Library::builtin();
    library.models().into_iter().map(String::from).collect()
}

fn command(id: u64, device: &str, action: Action) -> Command {
    Command {
        id,
        tenant: keys::TENANT.into(),
        gateway: keys::GATEWAY.into(),
        device: device.into(),
        issued_at: Timestamp(keys::NOW_MS - 1_000),
        expires_at: Timestamp(keys::NOW_MS + 600_000),
        action,
    }
}

fn commands() -> Vec<(&'static str, Command)> {
    let flood = Playback {
        broadcast: 9,
        level: Level::Red,
        content: Content::Tts { text: "山洪预警：请立即撤离到高处。".into() },
        repeat: 3,
        volume: Some(90),
        start_at: None,
    };
    let audio = Playback {
        broadcast: 10,
        level: Level::Yellow,
        content: Content::Audio { url: "http://ingest.local/audio/10.mp3".into(), sha256: [0xab; 32] },
        repeat: 1,
        volume: None,
        start_at: Some(Timestamp(keys::NOW_MS + 5_000)),
    };
    let id = keys::NOW_MS as u64;
    vec![
        ("pump-start", command(id, "dongcun-pump", Action::Write { point: "pump_run".into(), value: 1.0 })),
        ("flood-warning", command(id + 1, keys::SPEAKER, Action::Play(flood))),
        ("audio", command(id + 2, keys::SPEAKER, Action::Play(audio))),
        ("stop", command(id + 3, keys::SPEAKER, Action::Stop { broadcast: 9 })),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after a wire format changes"]
fn write_the_seed_corpora() {
    let models = models();
    let index = |m: &str| models.iter().position(|x| x == m).expect("model") as u8;

    // Real polls: firmware register maps read through the built-in profiles.
    let mut meter = WaterMeter::new(1_234_567);
    meter.sense(&MeterInputs { flow_l_per_h: 180.0, battery_v: 3.61, tamper: false }, 60.0);
    let mut quality = WaterQuality::new();
    let probes = QualityInputs {
        chlorine_mg_l: 0.52,
        turbidity_ntu: 0.31,
        ph: 7.42,
        conductivity_us_cm: 412.0,
        temperature_c: 14.7,
        sensor_ok: true,
    };
    quality.sense(&probes, 10.0);
    let mut barn = BarnClimate::new();
    barn.sense(&ClimateInputs { temperature_c: 27.5, humidity_pct: 71.0, sensor_ok: true });
    let polls = [
        (poll(&meter, "dongcun-meter-001", "vt-sim-water-meter"), "vt-sim-water-meter"),
        (poll(&quality, "dongcun-wq", "vt-sim-water-quality"), "vt-sim-water-quality"),
        (poll(&barn, "farm-barn-1", "vt-sim-barn-climate"), "vt-sim-barn-climate"),
    ];
    let mut readings = Vec::new();
    for ((bytes, r), model) in &polls {
        write("modbus", &format!("poll-{model}"), &with(&[0, index(model)], bytes));
        readings.extend(r.iter().cloned());
    }
    let batch = Batch { gateway: keys::GATEWAY.into(), seq: 40_213, readings };
    let poll_bin = codec::encode(&batch, Codec::Binary);
    write("batch", "poll.bin", &poll_bin);
    write("batch", "poll.json", &codec::encode(&batch, Codec::Json));
    let odd = Batch {
        gateway: "gw-xicun".into(),
        seq: 1,
        readings: vec![
            Reading { quality: Quality::Uncertain, ..Reading::new("x-1", Metric::new("ph"), Timestamp(5), f64::NAN) },
            Reading { quality: Quality::Bad, ..Reading::new("x-1", Metric::new("my_custom"), Timestamp(5), -0.0) },
            Reading::new("x-2", Metric::new("flow"), Timestamp(-7), std::f64::consts::PI),
        ],
    };
    write("batch", "odd.bin", &codec::encode(&odd, Codec::Binary));
    write("batch", "odd.json", &codec::encode(&odd, Codec::Json));

    // Registers of one value; a speaker's command log after a flood warning.
    write(
        "modbus",
        "f32-abcd",
        &with(&[1, 6, 0], &le_words(&protocol::modbus::from_f32(629.194, protocol::modbus::WordOrder::Abcd))),
    );
    write("modbus", "i64-dcba", &with(&[1, 5, 3], &le_words(&[0xFFFF, 0xFFFF, 0xFFFE, 0xFFFF])));

    // Commands as ingest signs them, and their canonical bodies.
    let ingest = keys::ingest();
    let mut speaker_program = Vec::new();
    for (name, cmd) in commands() {
        let wire = cmd.sign(&ingest);
        let body = cmd.to_bytes();
        write("command", &format!("wire-{name}"), &with(&[0], &wire));
        write("command", &format!("body-{name}"), &with(&[1, 0, 0, 7, 0, 1], &body));
        write("downlink", &format!("command-{name}"), &with(&[0], &wire));
        write("downlink", &format!("body-{name}"), &with(&[2], &body));
        if cmd.device == keys::SPEAKER {
            speaker_program.push(2);
            speaker_program.extend_from_slice(&(body.len() as u16).to_le_bytes());
            speaker_program.extend_from_slice(&body);
            speaker_program.extend_from_slice(&[4, 0, 20]); // five seconds pass, all healthy
        }
    }
    // The log block as the speaker shows it then, and a read of it over RTU.
    let mut s = Speaker::new(70);
    s.provision(ingest.verifying_key().to_bytes(), keys::GATEWAY, keys::SPEAKER).expect("key");
    s.set_clock(Timestamp(keys::NOW_MS));
    for (_, cmd) in commands() {
        let _ = s.accept_envelope(&cmd.sign(&ingest), Timestamp(keys::NOW_MS));
    }
    let mut block = vec![0u16; usize::from(speaker::LOG_REGISTERS)];
    read_registers(&s, firmware::Table::Input, speaker::LOG_BASE, &mut block).expect("log");
    let mut two = vec![0u8; block.len() * 2]; // a first block of zeros: nothing seen yet
    two.extend(le_words(&block));
    write("modbus", "speaker-log", &with(&[2], &two));
    speaker_program.extend_from_slice(&[1, 5, 4, 0, 100, 0, 106]); // read the log block
    speaker_program.extend_from_slice(&[1, 5, 6, 0, 0, 0, 55]); // volume 55
    speaker_program.extend_from_slice(&[5, 0x2c, 0x01]); // the clock jumps 300 s
    write("speaker", "broadcasts", &speaker_program);
    let mut frame = vec![5, 4, 0, 0, 0, 17]; // unit 5: input registers 0..=16, the status block
    frame.extend_from_slice(&firmware::crc::crc16(&frame).to_le_bytes());
    write("speaker", "rtu-read-status", &with(&[0, frame.len() as u8], &frame));

    // Envelopes on the MQTT plane, and a speaker's receipt.
    let gateway_link =
        auth::LinkKey::for_gateway(&keys::gateway(), &ingest.verifying_key(), keys::TENANT, keys::GATEWAY)
            .expect("link key");
    let topic = |c| Topic::new(keys::TENANT, keys::GATEWAY, c);
    let telemetry = auth::seal_mac(&topic(Channel::Telemetry), &gateway_link, 40_213, &poll_bin);
    write("auth", "sealed-batch", &with(&[0, 0], &telemetry));
    let gateway_toml = read("gateway/gateway.example.toml");
    let config = auth::seal_signed(&topic(Channel::Config), &ingest, 3, gateway_toml.as_bytes());
    write("auth", "signed-config", &with(&[0, 4], &config));
    write("auth", "seal-status", &with(&[1, 1, 7, 0, 0, 0, 1, 0, 0, 0, 9, 0, 1, 0], br#"{"online":true}"#));
    let receipt = Receipt {
        gateway: keys::GATEWAY.into(),
        device: keys::SPEAKER.into(),
        command: keys::NOW_MS as u64 + 1,
        broadcast: 9,
        state: 4,
        reason: 0,
        counter: 1,
    };
    let signed = serde_json::to_vec(&receipt.signed(&keys::speaker())).expect("json");
    write("auth", "receipt", &with(&[2, 0], &signed));

    // Downlink: a delivery ack and a configuration as ingest signs them.
    let ack = DeliveryAck { seq: 40_213 }.to_json();
    write("downlink", "delivery", &with(&[0], &auth::seal_signed(&topic(Channel::Delivery), &ingest, 12, &ack)));
    write("downlink", "config", &with(&[0], &config));
    write("downlink", "signed-delivery-body", &with(&[1, 12, 0, 0, 0, 0, 0, 0, 0], &ack));
    write("downlink", "signed-config-body", &with(&[1, 3, 0, 0, 0, 0, 0, 0, 0], gateway_toml.as_bytes()));

    // Line protocol as Telegraf and the client libraries write it, and the tests' escapes.
    write(
        "line_protocol",
        "telegraf",
        b"cpu,host=server01,region=us-west usage_idle=98.5,usage_user=1i,ok=true 1700000000000000000\n\
          # a comment\n\
          water,device=dongcun-meter-001 volume_total=1234.567,flow=0.012 1763900000000\n\
          mem,host=server-1 used=42u,note=\"ok, fine\" 1763900000\n",
    );
    write(
        "line_protocol",
        "escapes",
        br#"my\ meas\,x,ta\=g=v\ 1 f\ k="say \"hi\" \\ ok",n=-1.5e2,u=3u
a\,b\ c,t\=x=y\\ f="q\"\\",g=1i,h=-2.5e-3,i=tRuE 123
m s="a, b=c d",v=1 5"#,
    );

    // CAP: the OASIS appendix fixture, the tests' sample, a cancel.
    write("cap", "nws-severe-thunderstorm.xml", read("tests/fixtures/cap/nws-ksto-severe-thunderstorm.xml").as_bytes());
    let sample = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>43b080713727</identifier>
  <sender>hsas@dhs.gov</sender>
  <sent>2003-04-02T14:39:01-05:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-CN</language>
    <category>Geo</category>
    <event>山洪</event>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Likely</certainty>
    <expires>2003-04-03T14:39:01-05:00</expires>
    <headline>Flood &amp; landslide &lt;warning&gt; &#x5C71;</headline>
    <description><![CDATA[Move <now>]]></description>
    <instruction>Go to high ground.</instruction>
    <parameter><valueName>VT-REPEAT</valueName><value>3</value></parameter>
    <area><areaDesc>Dongcun</areaDesc><geocode><valueName>VT-TARGET</valueName><value>village:dongcun</value></geocode></area>
  </info>
</alert>"#;
    write("cap", "flood.xml", sample.as_bytes());
    write(
        "cap",
        "cancel.xml",
        br#"<cap:alert xmlns:cap="urn:oasis:names:tc:emergency:cap:1.2"><cap:identifier>x</cap:identifier><cap:sender>s</cap:sender><cap:sent>2026-11-23T14:05:00+08:00</cap:sent><cap:status>Test</cap:status><cap:msgType>Cancel</cap:msgType><cap:scope>Public</cap:scope><cap:references>s,43b080713727,2003-04-02T14:39:01-05:00</cap:references></cap:alert>"#,
    );

    // TOML: the shipped profiles and example configs.
    for (i, m) in ["vt-sim-water-meter", "vt-sim-collar-hub", "vt-sim-speaker", "xylem-cl500"].iter().enumerate() {
        let text = read(&format!("gateway/profiles/{m}.toml"));
        write("config", &format!("{i}-profile-{m}"), &with(&[0], text.as_bytes()));
    }
    write("config", "gateway", &with(&[1], gateway_toml.as_bytes()));
    write("config", "ingest", &with(&[2], read("ingest/ingest.example.toml").as_bytes()));
    write("config", "inventory", &with(&[3], read("ingest/inventory.example.toml").as_bytes()));
    write("config", "rules-drinking-water", &with(&[4], read("ingest/rules/drinking-water.toml").as_bytes()));
}
