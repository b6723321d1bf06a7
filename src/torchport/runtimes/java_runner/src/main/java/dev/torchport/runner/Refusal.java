package dev.torchport.runner;

/** A bundle this runner refuses to run: reported as one {@code error: } line, exit code 2, and no result.json. */
final class Refusal extends Exception {
    Refusal(String message) {
        super(message);
    }
}
