//! `owlet chat` as a person uses it: the real binary on a pseudo-terminal, typing keys (Ctrl-C,
//! Ctrl-D, arrows, bytes that are not UTF-8) and reading the screen. Every wait polls the
//! output for an expected text with a generous deadline, so a loaded machine only makes the
//! tests slower; a failure prints what the terminal showed.
#![cfg(unix)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// How long any one expected text may take to appear (a debug build on a busy 2-core machine).
const PATIENCE: Duration = Duration::from_secs(120);

/// `owlet chat` on a pseudo-terminal.
struct Tty {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    output: Receiver<Vec<u8>>,
    /// Everything the terminal showed so far.
    screen: Vec<u8>,
    /// Where the next `expect` starts looking.
    cursor: usize,
    _master: Box<dyn MasterPty + Send>,
}

impl Tty {
    /// Starts `owlet chat ARGS` on the demo model.
    fn chat(args: &[&str]) -> Tty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 200,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_owlet"));
        cmd.arg("chat");
        cmd.args(args);
        cmd.cwd(Path::new(env!("CARGO_MANIFEST_DIR")));
        cmd.env("TERM", "xterm");
        let child = pair.slave.spawn_command(cmd).expect("spawn owlet chat");
        // Only the child holds the terminal's other end now: its exit ends our reads.
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Tty {
            child,
            writer,
            output,
            screen: Vec::new(),
            cursor: 0,
            _master: pair.master,
        }
    }

    /// What the terminal showed, for failure messages.
    fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Waits until `text` appears after the previous match; moves past it.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = find(&self.screen[self.cursor..], text.as_bytes()) {
                self.cursor += i + text.len();
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .output
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(_) if Instant::now() >= deadline || self.exited() => panic!(
                    "{text:?} did not appear; the terminal showed:\n{}",
                    self.transcript()
                ),
                Err(_) => {}
            }
        }
    }

    /// Waits until at least `n` more bytes were shown after the previous match.
    fn expect_bytes(&mut self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.screen.len() < self.cursor + n {
            match self.output.recv_timeout(Duration::from_millis(200)) {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(_) if Instant::now() >= deadline || self.exited() => {
                    panic!(
                        "no output came; the terminal showed:\n{}",
                        self.transcript()
                    )
                }
                Err(_) => {}
            }
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Waits for the program to end; returns its exit code and reads the rest of the screen.
    fn wait(&mut self) -> u32 {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "owlet chat did not exit; the terminal showed:\n{}",
                    self.transcript()
                );
            }
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(100)) {
                self.screen.extend_from_slice(&chunk);
            }
        };
        // The reader ends when the terminal closes.
        while let Ok(chunk) = self.output.recv_timeout(Duration::from_secs(2)) {
            self.screen.extend_from_slice(&chunk);
        }
        status.exit_code()
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const PROMPT: &str = "> ";

#[test]
fn ctrl_c_stops_the_answer_and_the_conversation_goes_on() {
    // Answers long enough to be interrupted: up to the whole context.
    let mut t = Tty::chat(&["-n", "4000", "--ignore-eos"]);
    t.expect(PROMPT);
    t.send(b"Tell me a long story.\r");
    t.expect("Tell me a long story.");
    t.expect_bytes(40); // the answer is streaming
    t.send(b"\x03");
    t.expect("(answer stopped");
    t.expect(PROMPT);
    // Still alive, and answering the next message: interrupt that one too.
    t.send(b"And then?\r");
    t.expect("And then?");
    t.expect_bytes(40);
    t.send(b"\x03");
    t.expect("(answer stopped");
    t.expect(PROMPT);
    t.send(b"/quit\r");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
}

#[test]
fn ctrl_c_twice_at_an_empty_prompt_leaves() {
    let mut t = Tty::chat(&[]);
    t.expect(PROMPT);
    // Ctrl-C on a typed line drops the line only.
    t.send(b"half a thought\x03");
    t.expect(PROMPT);
    assert!(
        !t.transcript().contains("Ctrl-C again"),
        "{}",
        t.transcript()
    );
    t.send(b"\x03");
    t.expect("(Ctrl-C again or Ctrl-D to quit)");
    t.expect(PROMPT);
    t.send(b"\x03");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
}

#[test]
fn ctrl_d_leaves_on_a_new_line() {
    let mut t = Tty::chat(&[]);
    t.expect(PROMPT);
    t.send(b"\x04");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
    // The shell's prompt must not follow owlet's on the same line.
    let rest = &t.screen[t.cursor..];
    assert!(
        rest.contains(&b'\n'),
        "no newline after Ctrl-D: {:?}",
        String::from_utf8_lossy(rest)
    );
}

#[test]
fn a_line_that_is_not_utf8_is_refused_and_the_chat_goes_on() {
    let mut t = Tty::chat(&["-n", "2"]);
    t.expect(PROMPT);
    t.send(b"caf\xe9 au lait\r");
    t.expect("not UTF-8");
    t.expect(PROMPT);
    t.send(b"/help\r");
    t.expect("commands:");
    t.expect(PROMPT);
    t.send(b"/quit\r");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
    // The rest of the refused line was dropped, not read as the next line.
    assert!(!t.transcript().contains("au lait"), "{}", t.transcript());
}

#[test]
fn lines_can_be_edited_and_recalled_and_commands_are_checked() {
    let mut t = Tty::chat(&[]);
    t.expect(PROMPT);
    // "/hlp", two steps left, "e": "/help".
    t.send(b"/hlp\x1b[D\x1b[De\r");
    t.expect("commands:");
    t.expect(PROMPT);
    // Up recalls "/help".
    t.send(b"\x1b[A\r");
    t.expect("commands:");
    t.expect(PROMPT);
    // An unknown command lists the commands instead of going to the model.
    t.send(b"/imgae cat.png\r");
    t.expect("unknown command /imgae");
    t.expect("/image PATH");
    t.expect(PROMPT);
    t.send(b"/image\r");
    t.expect("usage: /image PATH");
    t.expect(PROMPT);
    t.send(b"\x04");
    assert_eq!(t.wait(), 0, "{}", t.transcript());
}
